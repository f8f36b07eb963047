-- Text filters compare keys made by one rule, the application's (domain::text::
-- match_key: full Unicode case folding and NFC). lower() here is that rule: the
-- application registers it on every connection it opens, migrations' included. A
-- location filter compares location_key; a search compares title_key and
-- description_key.
--
-- A write made by another program that leaves a key unset, or changes a text but not
-- its key, gets that program's lower() from the triggers (SQLite's built-in one folds
-- only ASCII; `listings migrate --rekey` recomputes those keys).
ALTER TABLE properties ADD COLUMN title_key TEXT;
ALTER TABLE properties ADD COLUMN description_key TEXT;
UPDATE properties SET title_key = lower(title), description_key = lower(description);
-- Keys made by the earlier rule (lower case only), where it differs.
UPDATE properties SET location_key = lower(location) WHERE location_key IS NOT lower(location);

CREATE TRIGGER properties_text_keys_insert AFTER INSERT ON properties
    WHEN NEW.title_key IS NULL OR NEW.description_key IS NULL
BEGIN
    UPDATE properties SET title_key = coalesce(NEW.title_key, lower(NEW.title)),
                          description_key = coalesce(NEW.description_key, lower(NEW.description))
        WHERE id = NEW.id;
END;

CREATE TRIGGER properties_title_key_update AFTER UPDATE OF title ON properties
    WHEN NEW.title IS NOT OLD.title AND NEW.title_key IS OLD.title_key
BEGIN
    UPDATE properties SET title_key = lower(NEW.title) WHERE id = NEW.id;
END;

CREATE TRIGGER properties_description_key_update AFTER UPDATE OF description ON properties
    WHEN NEW.description IS NOT OLD.description AND NEW.description_key IS OLD.description_key
BEGIN
    UPDATE properties SET description_key = lower(NEW.description) WHERE id = NEW.id;
END;
