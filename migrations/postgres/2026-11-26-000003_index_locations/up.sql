-- location filters compare lower(location); with the price they walk this index, for
-- the page and for its count, instead of scanning the table.
CREATE INDEX properties_by_location ON properties (lower(location), price, id);
