-- ordering=price and the price filters walk this index instead of sorting the table.
CREATE INDEX properties_by_price ON properties (price, id);
