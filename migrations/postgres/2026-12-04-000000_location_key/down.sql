DROP INDEX properties_by_location_newest;
DROP INDEX properties_by_location;
CREATE INDEX properties_by_location ON properties (lower(location), price, id);
DROP TRIGGER properties_location_key ON properties;
DROP FUNCTION listings_location_key();
ALTER TABLE properties DROP COLUMN location_key;
