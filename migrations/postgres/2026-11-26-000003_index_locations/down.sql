DROP INDEX properties_by_location;
