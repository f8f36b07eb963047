-- Kept in step with the PostgreSQL migrations. SQLite has no NOTIFY: servers on SQLite
-- notice other processes' commits through PRAGMA data_version instead.
SELECT 1;
