-- Kept in step with the PostgreSQL migrations. SQLite plans every statement for its
-- values: its page statements need no function to find their page's ids.
SELECT 1;
