-- Every committed change to properties, from the application or from anything else
-- (psql, another program, a later migration), notifies the running servers, which
-- retire their caches. NOTIFY is delivered at commit, never before. The payload is
-- `table:origin`; the application's connections set listings.origin to a tag naming
-- the cache they invalidate themselves (empty for everyone else).
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
