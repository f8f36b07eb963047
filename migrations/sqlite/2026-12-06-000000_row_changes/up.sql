-- Which rows each write changed, for the servers' caches and for the counts.
--
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
    DELETE FROM listing_changes WHERE seq <= (SELECT max(seq) FROM listing_changes) - 10000;
END;
