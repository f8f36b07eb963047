-- Location filters and their counts compare a stored key (the location as the
-- application lower-cases it, set by every write of the application) through indexes
-- that hold it, instead of lower(location) computed per row. Rows already there get
-- PostgreSQL's lower() here (the same as the filters compared until now). A write made
-- outside the application (its sessions set listings.origin) that leaves the key unset,
-- or changes the location but not the key, gets PostgreSQL's lower() from the trigger;
-- the application's own key is never replaced.
ALTER TABLE properties ADD COLUMN location_key TEXT;
UPDATE properties SET location_key = lower(location);
ALTER TABLE properties ALTER COLUMN location_key SET NOT NULL;

CREATE FUNCTION listings_location_key() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.location_key IS NULL
        OR (TG_OP = 'UPDATE' AND coalesce(current_setting('listings.origin', true), '') = ''
            AND NEW.location IS DISTINCT FROM OLD.location
            AND NEW.location_key IS NOT DISTINCT FROM OLD.location_key) THEN
        NEW.location_key := lower(NEW.location);
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER properties_location_key
    BEFORE INSERT OR UPDATE ON properties
    FOR EACH ROW EXECUTE FUNCTION listings_location_key();

DROP INDEX properties_by_location;
CREATE INDEX properties_by_location ON properties (location_key, price, id);
CREATE INDEX properties_by_location_newest ON properties (location_key, created_at DESC, id DESC);
