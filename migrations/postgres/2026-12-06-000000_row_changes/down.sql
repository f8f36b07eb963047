DROP TRIGGER properties_notify_truncate ON properties;
DROP TRIGGER properties_notify_delete ON properties;
DROP TRIGGER properties_notify_update ON properties;
DROP TRIGGER properties_notify_insert ON properties;
DROP FUNCTION listings_notify_truncate();
DROP FUNCTION listings_notify_delete();
DROP FUNCTION listings_notify_update();
DROP FUNCTION listings_notify_insert();
DROP FUNCTION listings_record_changes(listings_change[]);
DROP TYPE listings_change;
CREATE FUNCTION listings_notify_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(
        'listings_changes',
        TG_TABLE_NAME || ':' || coalesce(current_setting('listings.origin', true), '')
    );
    RETURN NULL;
END;
$$;
CREATE TRIGGER properties_notify_change
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON properties
    FOR EACH STATEMENT EXECUTE FUNCTION listings_notify_change();
DROP FUNCTION listings_row_facts(bigint, text, numeric, timestamptz);
DROP FUNCTION listings_count_nodes(bigint, text, numeric, bigint, text, numeric);
DROP TABLE listing_versions;
DROP TABLE listing_counts;
DROP TABLE price_band_edges;
DROP INDEX properties_by_location_newest;
CREATE INDEX properties_by_location_newest ON properties (location_key, created_at DESC, id DESC);
DROP INDEX properties_newest_first;
CREATE INDEX properties_newest_first ON properties (created_at DESC, id DESC);
