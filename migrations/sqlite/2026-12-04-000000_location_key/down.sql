DROP INDEX properties_by_location_newest;
DROP INDEX properties_by_location;
DROP TRIGGER properties_location_key_update;
DROP TRIGGER properties_location_key_insert;
ALTER TABLE properties DROP COLUMN location_key;
