DROP TRIGGER properties_text_keys ON properties;
DROP FUNCTION listings_text_keys();

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

DROP TABLE text_keys_pending;
ALTER TABLE properties DROP COLUMN title_key, DROP COLUMN description_key;
