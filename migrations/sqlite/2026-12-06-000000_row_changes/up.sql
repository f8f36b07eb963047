-- Which rows each write changed, for the servers' caches and for the counts; and the
-- indexes and counts that keep a page's miss cheap.

-- Newest-first pages filtered by price find their rows in these alone (a page's ids
-- from the index, then its rows by id): the price is in them.
DROP INDEX properties_newest_first;
CREATE INDEX properties_newest_first ON properties (created_at DESC, id DESC, price);
DROP INDEX properties_by_location_newest;
CREATE INDEX properties_by_location_newest
    ON properties (location_key, created_at DESC, id DESC, price);

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
) WITHOUT ROWID;
INSERT INTO listing_counts (location_key, band, n)
    SELECT coalesce(location_key, ''), band, count(*)
    FROM (SELECT location_key, (SELECT count(*) FROM price_band_edges WHERE low <= price) AS band
          FROM properties) banded
    GROUP BY 1, 2;

-- Versions of the sets of rows a count depends on, so that every page of one search
-- can share one count: a count is reused by a later page only if that page's read
-- transaction sees the versions the count was computed under. Nodes: 'g' (every row:
-- insert, delete), 'p' (every row's price: insert, delete, price change), 'l:<key>'
-- (the rows of one location key: insert, delete, location change from or to it),
-- 'lp:<key>' (those and their prices). ('all', bumped by PostgreSQL's TRUNCATE, has no
-- cause here: SQLite deletes row by row when a table has triggers.)
CREATE TABLE listing_versions (
    node TEXT PRIMARY KEY,
    version INTEGER NOT NULL
) WITHOUT ROWID;

-- Every row a write changed, in commit order (before: old_*, NULL for an insert;
-- after: new_*, NULL for a delete). A server learns what another process committed by
-- reading what follows the last entry it acted on. Only the last 10,000 entries are
-- kept: a server that finds some missing retires everything.
CREATE TABLE listing_changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    old_id INTEGER,
    old_key TEXT,
    old_price NUMERIC,
    old_created TEXT,
    new_id INTEGER,
    new_key TEXT,
    new_price NUMERIC,
    new_created TEXT
);

CREATE TRIGGER properties_changes_insert AFTER INSERT ON properties
BEGIN
    INSERT INTO listing_changes (new_id, new_key, new_price, new_created)
        VALUES (NEW.id, NEW.location_key, NEW.price, NEW.created_at);
    INSERT INTO listing_versions (node, version)
        SELECT node, 1 FROM (
            SELECT 'g' AS node UNION SELECT 'p'
            UNION SELECT 'l:' || NEW.location_key UNION SELECT 'lp:' || NEW.location_key
        ) WHERE node IS NOT NULL
        ON CONFLICT (node) DO UPDATE SET version = version + 1;
    INSERT INTO listing_counts (location_key, band, n)
        SELECT coalesce(NEW.location_key, ''),
               (SELECT count(*) FROM price_band_edges WHERE low <= NEW.price), 1
        WHERE true
        ON CONFLICT (location_key, band) DO UPDATE SET n = n + 1;
    DELETE FROM listing_changes WHERE seq <= (SELECT max(seq) FROM listing_changes) - 10000;
END;

CREATE TRIGGER properties_changes_update AFTER UPDATE ON properties
BEGIN
    INSERT INTO listing_changes
        (old_id, old_key, old_price, old_created, new_id, new_key, new_price, new_created)
        VALUES (OLD.id, OLD.location_key, OLD.price, OLD.created_at,
                NEW.id, NEW.location_key, NEW.price, NEW.created_at);
    INSERT INTO listing_versions (node, version)
        SELECT node, 1 FROM (
            SELECT 'g' AS node WHERE OLD.id IS NOT NEW.id
            UNION SELECT 'p' WHERE OLD.id IS NOT NEW.id OR OLD.price IS NOT NEW.price
            UNION SELECT 'l:' || OLD.location_key
                WHERE OLD.id IS NOT NEW.id OR OLD.location_key IS NOT NEW.location_key
            UNION SELECT 'l:' || NEW.location_key
                WHERE OLD.id IS NOT NEW.id OR OLD.location_key IS NOT NEW.location_key
            UNION SELECT 'lp:' || OLD.location_key
                WHERE OLD.id IS NOT NEW.id OR OLD.location_key IS NOT NEW.location_key
                   OR OLD.price IS NOT NEW.price
            UNION SELECT 'lp:' || NEW.location_key
                WHERE OLD.id IS NOT NEW.id OR OLD.location_key IS NOT NEW.location_key
                   OR OLD.price IS NOT NEW.price
        ) WHERE node IS NOT NULL
        ON CONFLICT (node) DO UPDATE SET version = version + 1;
    INSERT INTO listing_counts (location_key, band, n)
        SELECT coalesce(OLD.location_key, ''),
               (SELECT count(*) FROM price_band_edges WHERE low <= OLD.price), -1
        WHERE true
        ON CONFLICT (location_key, band) DO UPDATE SET n = n - 1;
    INSERT INTO listing_counts (location_key, band, n)
        SELECT coalesce(NEW.location_key, ''),
               (SELECT count(*) FROM price_band_edges WHERE low <= NEW.price), 1
        WHERE true
        ON CONFLICT (location_key, band) DO UPDATE SET n = n + 1;
    DELETE FROM listing_changes WHERE seq <= (SELECT max(seq) FROM listing_changes) - 10000;
END;

CREATE TRIGGER properties_changes_delete AFTER DELETE ON properties
BEGIN
    INSERT INTO listing_changes (old_id, old_key, old_price, old_created)
        VALUES (OLD.id, OLD.location_key, OLD.price, OLD.created_at);
    INSERT INTO listing_versions (node, version)
        SELECT node, 1 FROM (
            SELECT 'g' AS node UNION SELECT 'p'
            UNION SELECT 'l:' || OLD.location_key UNION SELECT 'lp:' || OLD.location_key
        ) WHERE node IS NOT NULL
        ON CONFLICT (node) DO UPDATE SET version = version + 1;
    INSERT INTO listing_counts (location_key, band, n)
        SELECT coalesce(OLD.location_key, ''),
               (SELECT count(*) FROM price_band_edges WHERE low <= OLD.price), -1
        WHERE true
        ON CONFLICT (location_key, band) DO UPDATE SET n = n - 1;
    DELETE FROM listing_changes WHERE seq <= (SELECT max(seq) FROM listing_changes) - 10000;
END;
