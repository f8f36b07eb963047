-- SQLite enforces neither VARCHAR(n) nor NUMERIC(10,2): the CHECKs do.
-- AUTOINCREMENT keeps ids of deleted rows from being reused, as PostgreSQL's sequence does.
CREATE TABLE properties (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    title TEXT NOT NULL CHECK (length(trim(title)) BETWEEN 1 AND 200),
    description TEXT NOT NULL DEFAULT '',
    price NUMERIC NOT NULL CHECK (price >= 0 AND price < 100000000),
    location TEXT NOT NULL CHECK (length(trim(location)) BETWEEN 1 AND 100),
    created_at TIMESTAMP NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE INDEX properties_newest_first ON properties (created_at DESC, id DESC);
