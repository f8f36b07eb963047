DROP INDEX properties_by_price;
