-- Location filters and their counts compare a stored key (the location as the
-- application lower-cases it, set by every write of the application) through indexes
-- that hold it. lower() here is the application's Unicode one, registered on every
-- connection it opens. A write made by another program that leaves the key unset, or
-- changes the location but not the key, gets that program's lower() from the triggers
-- (SQLite's built-in one folds only ASCII).
ALTER TABLE properties ADD COLUMN location_key TEXT;
UPDATE properties SET location_key = lower(location);

CREATE TRIGGER properties_location_key_insert AFTER INSERT ON properties
    WHEN NEW.location_key IS NULL
BEGIN
    UPDATE properties SET location_key = lower(NEW.location) WHERE id = NEW.id;
END;

CREATE TRIGGER properties_location_key_update AFTER UPDATE OF location ON properties
    WHEN NEW.location IS NOT OLD.location AND NEW.location_key IS OLD.location_key
BEGIN
    UPDATE properties SET location_key = lower(NEW.location) WHERE id = NEW.id;
END;

CREATE INDEX properties_by_location ON properties (location_key, price, id);
CREATE INDEX properties_by_location_newest ON properties (location_key, created_at DESC, id DESC);
