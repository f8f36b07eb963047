-- Kept in step with the PostgreSQL migrations. SQLite's filters use an application-defined
-- Unicode lower(), which an index built with the built-in (ASCII) one would contradict.
SELECT 1;
