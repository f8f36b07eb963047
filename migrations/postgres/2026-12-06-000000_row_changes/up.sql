-- Which rows each statement changed, for the servers' caches and for the counts; and
-- the indexes and counts that keep a page's miss cheap.
--
-- Versions of the sets of rows a count depends on, so that every page of one search
-- can share one count: a count is reused by a later page only if that page's read
-- transaction sees the versions the count was computed under. Nodes: 'all' (every
-- count: TRUNCATE), 'g' (every row: insert, delete), 'p' (every row's price: insert,
-- delete, price change), 'l:<key>' (the rows of one location key: insert, delete,
-- location change from or to it), 'lp:<key>' (those and their prices).
CREATE TABLE listing_versions (
    node TEXT PRIMARY KEY,
    version BIGINT NOT NULL
);

-- The price bands of the application (its `domain::price_band`): a price's band is how
-- many of these lower bounds it reaches.
CREATE TABLE price_band_edges (low NUMERIC PRIMARY KEY);
INSERT INTO price_band_edges (low) VALUES
    (1200), (1430), (1720), (2050), (2460), (2940), (3520), (4220), (5050), (6040),
    (7230), (8660), (10400), (12400), (14900), (17800), (21300), (25500), (30500),
    (36500), (43700), (52300), (62600), (75000), (89800), (107000), (129000), (154000),
    (184000), (221000), (264000), (316000), (379000), (453000), (542000), (649000),
    (777000), (931000), (1110000), (1330000), (1600000), (1910000), (2290000),
    (2740000), (3280000), (3920000), (4700000), (5620000), (6730000), (8060000),
    (9650000), (11500000), (13800000), (16500000), (19800000), (23700000), (28400000),
    (34000000), (40700000), (48700000), (58300000), (69800000), (83500000);

-- How many rows each location key ('' for a row without one) has in each price band,
-- kept by the same triggers in the writing transaction: a page's count is the sum of
-- the bands its range covers whole and, in the bands its bounds fall in, an index range
-- scan, all in the page's own snapshot.
CREATE TABLE listing_counts (
    location_key TEXT NOT NULL,
    band INTEGER NOT NULL,
    n BIGINT NOT NULL,
    PRIMARY KEY (location_key, band)
);
INSERT INTO listing_counts (location_key, band, n)
    SELECT coalesce(location_key, ''), band, count(*)
    FROM (SELECT location_key, (SELECT count(*) FROM price_band_edges WHERE low <= price) AS band
          FROM properties) banded
    GROUP BY 1, 2;

-- Newest-first pages filtered by price find their rows in these alone (a page's ids
-- from the index, then its rows by id): the price is in them.
DROP INDEX properties_newest_first;
CREATE INDEX properties_newest_first ON properties (created_at DESC, id DESC) INCLUDE (price);
DROP INDEX properties_by_location_newest;
CREATE INDEX properties_by_location_newest
    ON properties (location_key, created_at DESC, id DESC) INCLUDE (price);

-- The count nodes a change of one row touches: the row before (o_: NULL for an
-- insert) and after (n_: NULL for a delete).
CREATE FUNCTION listings_count_nodes(o_id bigint, o_key text, o_price numeric,
                                     n_id bigint, n_key text, n_price numeric)
RETURNS text[] LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN o_id IS NULL THEN ARRAY['g', 'p', 'l:' || n_key, 'lp:' || n_key]
        WHEN n_id IS NULL THEN ARRAY['g', 'p', 'l:' || o_key, 'lp:' || o_key]
        ELSE CASE WHEN o_key IS DISTINCT FROM n_key
                  THEN ARRAY['l:' || o_key, 'l:' || n_key, 'lp:' || o_key, 'lp:' || n_key]
                  ELSE ARRAY[]::text[] END
          || CASE WHEN o_price IS DISTINCT FROM n_price
                  THEN ARRAY['p', 'lp:' || o_key, 'lp:' || n_key]
                  ELSE ARRAY[]::text[] END
    END
$$;

-- What cache invalidation needs of a row: [id, location key, price, created_at], or
-- null for no row.
CREATE FUNCTION listings_row_facts(id bigint, location_key text, price numeric,
                                   created_at timestamptz)
RETURNS json LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN id IS NULL THEN NULL
                ELSE json_build_array(id, location_key, price::text, created_at) END
$$;

-- One row a statement changed: before (o_, NULL for an insert) and after (n_, NULL
-- for a delete).
CREATE TYPE listings_change AS (
    o_id bigint, o_key text, o_price numeric, o_created timestamptz,
    n_id bigint, n_key text, n_price numeric, n_created timestamptz
);

-- Every committed change to properties, from the application or from anything else
-- (psql, another program, a later migration), notifies the running servers. NOTIFY is
-- delivered at commit, never before. The payload is `table:origin` (the application's
-- connections set listings.origin to a tag naming the cache they invalidate
-- themselves; empty for everyone else), then, for a statement that changed at most 20
-- rows, `:` and a JSON array of [before, after] pairs of listings_row_facts (null for
-- the side an insert or a delete lacks); without it a server retires everything. The
-- same statement bumps the count versions and the counts, in the same transaction
-- (in the order of their keys, so that concurrent writers lock them in one order).
-- Static SQL, planned once per session; the search path is the migration's.
CREATE FUNCTION listings_record_changes(changes listings_change[]) RETURNS void
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    head text := 'properties:' || coalesce(current_setting('listings.origin', true), '');
    changed integer := coalesce(array_length(changes, 1), 0);
    facts json;
    payload text;
BEGIN
    IF changed = 0 THEN
        RETURN;
    END IF;
    INSERT INTO listing_versions (node, version)
        SELECT node, 1 FROM (
            SELECT DISTINCT unnest(listings_count_nodes(c.o_id, c.o_key, c.o_price,
                                                        c.n_id, c.n_key, c.n_price)) AS node
            FROM unnest(changes) c) nodes
        WHERE node IS NOT NULL ORDER BY node
        ON CONFLICT (node) DO UPDATE SET version = listing_versions.version + 1;
    INSERT INTO listing_counts (location_key, band, n)
        SELECT key, band, sum(delta) FROM (
            SELECT coalesce(c.n_key, '') AS key,
                   (SELECT count(*) FROM price_band_edges WHERE low <= c.n_price) AS band,
                   1 AS delta
            FROM unnest(changes) c WHERE c.n_id IS NOT NULL
            UNION ALL
            SELECT coalesce(c.o_key, ''),
                   (SELECT count(*) FROM price_band_edges WHERE low <= c.o_price), -1
            FROM unnest(changes) c WHERE c.o_id IS NOT NULL) deltas
        GROUP BY key, band HAVING sum(delta) <> 0 ORDER BY key, band
        ON CONFLICT (location_key, band) DO UPDATE SET n = listing_counts.n + excluded.n;
    payload := head;
    IF changed <= 20 THEN
        SELECT json_agg(json_build_array(
                   listings_row_facts(c.o_id, c.o_key, c.o_price, c.o_created),
                   listings_row_facts(c.n_id, c.n_key, c.n_price, c.n_created)))
            INTO facts FROM unnest(changes) c;
        payload := head || ':' || facts::text;
        -- NOTIFY takes at most 8000 bytes.
        IF octet_length(payload) > 7900 THEN
            payload := head;
        END IF;
    END IF;
    PERFORM pg_notify('listings_changes', payload);
END;
$$;

CREATE FUNCTION listings_notify_insert() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    PERFORM listings_record_changes(ARRAY(
        SELECT ROW(NULL, NULL, NULL, NULL, n.id, n.location_key, n.price, n.created_at)
               ::listings_change
        FROM new_rows n));
    RETURN NULL;
END;
$$;

CREATE FUNCTION listings_notify_update() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    PERFORM listings_record_changes(ARRAY(
        SELECT ROW(o.id, o.location_key, o.price, o.created_at,
                   n.id, n.location_key, n.price, n.created_at)::listings_change
        FROM old_rows o FULL JOIN new_rows n ON o.id = n.id));
    RETURN NULL;
END;
$$;

CREATE FUNCTION listings_notify_delete() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    PERFORM listings_record_changes(ARRAY(
        SELECT ROW(o.id, o.location_key, o.price, o.created_at, NULL, NULL, NULL, NULL)
               ::listings_change
        FROM old_rows o));
    RETURN NULL;
END;
$$;

CREATE FUNCTION listings_notify_truncate() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO listing_versions VALUES ('all', 1)
        ON CONFLICT (node) DO UPDATE SET version = listing_versions.version + 1;
    DELETE FROM listing_counts;
    PERFORM pg_notify('listings_changes',
                      'properties:' || coalesce(current_setting('listings.origin', true), ''));
    RETURN NULL;
END;
$$;

-- Transition tables need one trigger per event.
DROP TRIGGER properties_notify_change ON properties;
DROP FUNCTION listings_notify_change();
CREATE TRIGGER properties_notify_insert AFTER INSERT ON properties
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION listings_notify_insert();
CREATE TRIGGER properties_notify_update AFTER UPDATE ON properties
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION listings_notify_update();
CREATE TRIGGER properties_notify_delete AFTER DELETE ON properties
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION listings_notify_delete();
CREATE TRIGGER properties_notify_truncate AFTER TRUNCATE ON properties
    FOR EACH STATEMENT EXECUTE FUNCTION listings_notify_truncate();
