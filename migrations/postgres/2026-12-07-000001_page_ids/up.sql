-- The ids of one page of a search, planned for each call with its values known
-- (EXECUTE): for the pages whose best plan depends on their values, and the pages whose
-- window the page statement does not write as numbers.
--
-- The server's connections plan every statement once, generically (plan_cache_mode =
-- force_generic_plan): PostgreSQL otherwise makes five custom plans of each statement
-- on each connection before it tries the generic one, and a page statement took longer
-- to plan than to run. A generic plan cannot see values, and two kinds of page need
-- them: a price range in an order that no index with the price gives (newest or oldest
-- first, by id: a narrow range is best gathered and sorted, a wide one found by walking
-- the index of the order) or a location by id; and a window that is a parameter (a
-- generic plan assumes it a tenth of the table, and sorts every row of the filter).
-- Those pages take their ids from here: only this small statement is planned per call.
--
-- STABLE: its statement reads in the snapshot of the statement that calls it, so the
-- page still agrees with the count beside it. force_custom_plan: PostgreSQL 13 runs
-- EXECUTE ... USING through a cached plan, which the connection's force_generic_plan
-- would make generic (from 14 on, a one-shot plan is always made for the values).
CREATE FUNCTION listings_page_ids(key text, low numeric, high numeric, ordering text,
                                  page_size bigint, skip bigint)
RETURNS SETOF bigint LANGUAGE plpgsql STABLE ROWS 20
SET plan_cache_mode = force_custom_plan AS $$
DECLARE
    order_by text := CASE ordering
        WHEN 'created_at' THEN 'created_at ASC, id ASC'
        WHEN '-created_at' THEN 'created_at DESC, id DESC'
        WHEN 'id' THEN 'id ASC'
        WHEN '-id' THEN 'id DESC'
        WHEN 'price' THEN 'price ASC, id ASC'
        WHEN '-price' THEN 'price DESC, id DESC'
    END;
BEGIN
    IF order_by IS NULL THEN
        RAISE EXCEPTION 'listings_page_ids: no ordering %', ordering;
    END IF;
    RETURN QUERY EXECUTE
        'SELECT id FROM properties WHERE true'
        || CASE WHEN key IS NULL THEN '' ELSE ' AND location_key = $1' END
        || CASE WHEN low IS NULL THEN '' ELSE ' AND price >= $2' END
        || CASE WHEN high IS NULL THEN '' ELSE ' AND price <= $3' END
        || ' ORDER BY ' || order_by || ' LIMIT $4 OFFSET $5'
        USING key, low, high, page_size, skip;
END;
$$;
