DROP FUNCTION listings_page_ids(text, numeric, numeric, text, bigint, bigint);
