-- Text filters compare keys made by one rule, the application's (domain::text::
-- match_key: full Unicode case folding and NFC), which no SQL function reproduces
-- (lower() keeps ß and ς, and leaves decomposed accents apart). A location filter
-- compares location_key; a search compares title_key and description_key.
--
-- The rows already here get lower() now; `listings migrate` then recomputes every key
-- by the application's rule while it still holds the migration lock, and deletes the
-- text_keys_pending row when done (a migration stopped half-way is finished by the
-- next `listings migrate`). A write made outside the application that leaves a key
-- unset, or changes a text but not its key, gets lower() from the trigger, close to
-- the rule but not equal (`listings migrate --rekey` recomputes those keys).
ALTER TABLE properties ADD COLUMN title_key TEXT, ADD COLUMN description_key TEXT;
UPDATE properties SET title_key = lower(title), description_key = lower(description);
ALTER TABLE properties ALTER COLUMN title_key SET NOT NULL,
                       ALTER COLUMN description_key SET NOT NULL;

CREATE TABLE text_keys_pending (rule TEXT PRIMARY KEY);
INSERT INTO text_keys_pending (rule) VALUES ('nfc-casefold');

CREATE FUNCTION listings_text_keys() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    outside boolean := TG_OP = 'UPDATE'
        AND coalesce(current_setting('listings.origin', true), '') = '';
BEGIN
    IF NEW.location_key IS NULL
        OR (outside AND NEW.location IS DISTINCT FROM OLD.location
            AND NEW.location_key IS NOT DISTINCT FROM OLD.location_key) THEN
        NEW.location_key := lower(NEW.location);
    END IF;
    IF NEW.title_key IS NULL
        OR (outside AND NEW.title IS DISTINCT FROM OLD.title
            AND NEW.title_key IS NOT DISTINCT FROM OLD.title_key) THEN
        NEW.title_key := lower(NEW.title);
    END IF;
    IF NEW.description_key IS NULL
        OR (outside AND NEW.description IS DISTINCT FROM OLD.description
            AND NEW.description_key IS NOT DISTINCT FROM OLD.description_key) THEN
        NEW.description_key := lower(NEW.description);
    END IF;
    RETURN NEW;
END;
$$;

DROP TRIGGER properties_location_key ON properties;
DROP FUNCTION listings_location_key();
CREATE TRIGGER properties_text_keys
    BEFORE INSERT OR UPDATE ON properties
    FOR EACH ROW EXECUTE FUNCTION listings_text_keys();
