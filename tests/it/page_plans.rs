//! On PostgreSQL a page statement is planned once per connection (the server's
//! connections make generic plans at once): where its plan does not depend on the
//! filter's values, its window is written as numbers (so that the generic plan is the
//! custom one); where it does (a price range ordered newest first, a location ordered by
//! id) or its window is a parameter (a deep page), its page's ids come from
//! `listings_page_ids`, planned per call, and those pages are the ones a plain query
//! finds.

use diesel::QueryableByName;
use diesel::sql_query;
use diesel::sql_types::{BigInt, Text};
use diesel_async::{AsyncConnection as _, AsyncPgConnection, RunQueryDsl as _};
use listings::domain::PropertyQuery;
use listings::service::pg_page_with_count;

use crate::support::{TestEnv, run_sql_elsewhere};

#[derive(QueryableByName, Debug)]
struct Prepared {
    #[diesel(sql_type = Text)]
    statement: String,
    #[diesel(sql_type = BigInt)]
    generic_plans: i64,
}

/// The page statements prepared on `conn`.
async fn prepared(conn: &mut AsyncPgConnection) -> Vec<Prepared> {
    sql_query(
        "SELECT statement, generic_plans FROM pg_prepared_statements \
         WHERE statement LIKE 'WITH v AS%'",
    )
    .load(conn)
    .await
    .expect("read pg_prepared_statements")
}

/// The one statement of `all` that `matches`.
fn one<'a>(all: &'a [Prepared], what: &str, matches: impl Fn(&str) -> bool) -> &'a Prepared {
    let found: Vec<&Prepared> = all.iter().filter(|p| matches(&p.statement)).collect();
    match found.as_slice() {
        [one] => one,
        _ => panic!("not one statement for {what}: {all:#?}"),
    }
}

/// A database with enough rows that a plan for a tenth of them (what PostgreSQL
/// assumes of a parameter LIMIT) costs more than the custom plans: then a page whose
/// window is a parameter keeps being planned for its values. Prices 1000 to 1499, two
/// locations, every row a minute older than the one before.
async fn seeded() -> (TestEnv, AsyncPgConnection) {
    let env = TestEnv::postgres_redis().await;
    // Migrates the database.
    env.app().await;
    run_sql_elsewhere(
        &env,
        "INSERT INTO properties (title, price, location, created_at) \
         SELECT 'Row ' || i, 1000 + i % 500, (ARRAY['Lamu', 'Thika'])[1 + i % 2], \
                now() - i * interval '1 minute' \
         FROM generate_series(1, 20000) AS i",
    )
    .await;
    run_sql_elsewhere(&env, "ANALYZE properties").await;
    let conn = AsyncPgConnection::establish(&env.database_url)
        .await
        .expect("connect");
    (env, conn)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(listings_test_services), ignore = "needs PostgreSQL and Redis")]
async fn page_statements_are_planned_once() {
    let (_env, mut conn) = seeded().await;
    let searches = [
        "location=Lamu&ordering=-created_at&page=2&page_size=7",
        "location=Lamu&min_price=1005&max_price=1020&ordering=price&page=2&page_size=7",
        "location=Lamu&min_price=1005&max_price=1020&ordering=-created_at&page=2&page_size=7",
        "location=Lamu&ordering=-created_at&page=11&page_size=2",
        "location=Lamu&ordering=id&page=2&page_size=7",
    ];
    for search in searches {
        let query = PropertyQuery::from_query_string(search).expect("a valid search");
        // PostgreSQL compares its generic plan with the custom ones after five.
        for _ in 0..8 {
            pg_page_with_count(&mut conn, &query, None)
                .await
                .expect("the page statement runs")
                .expect("a page, not a search by text");
        }
    }

    let all = prepared(&mut conn).await;
    const NEWEST: &str = "ORDER BY properties.created_at DESC, properties.id DESC LIMIT";
    const CHEAPEST: &str = "ORDER BY properties.price ASC, properties.id ASC LIMIT";
    for (what, window) in [("newest first", NEWEST), ("cheapest first", CHEAPEST)] {
        let page = one(&all, what, |s| s.contains(&format!("{window} 7 OFFSET 7)")));
        assert!(page.generic_plans >= 3, "{what}: planned once: {page:?}");
    }
    // The plan of a price range newest first depends on the range, that of a location
    // by id on the location, and a deep page's window is a parameter: their page's ids
    // are planned per call, in `listings_page_ids`, and the statement around them once.
    let ranged = |s: &str| s.contains("price <= $");
    for (what, ordering, in_range) in [
        ("a price range newest first", "'-created_at'", true),
        ("a location by id", "'id'", false),
        ("a deep page", "'-created_at'", false),
    ] {
        let page = one(&all, what, |s| {
            s.contains("listings_page_ids(") && s.contains(ordering) && ranged(s) == in_range
        });
        assert!(page.generic_plans >= 3, "{what}: planned once: {page:?}");
    }
    assert!(
        all.iter().all(|p| !p.statement.contains("LIMIT $")),
        "no page statement carries its window as parameters: {all:#?}"
    );
}

/// The server's connections make generic plans at once, unless the operator's URL says
/// otherwise; a search by text, planned for its words, leaves them as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(listings_test_services), ignore = "needs PostgreSQL and Redis")]
async fn the_servers_connections_plan_once() {
    let env = TestEnv::postgres_redis().await;
    let mut one_connection = env.settings();
    one_connection.db.max_connections = 1;
    let app = env.app_with(one_connection).await;
    let mode = || app.pooled_setting("plan_cache_mode");
    assert_eq!(mode().await.as_deref(), Some("force_generic_plan"));
    let query = PropertyQuery::from_query_string("search=villa").expect("a valid search");
    listings::service::properties::list_properties(&app, &query)
        .await
        .expect("a search by text");
    assert_eq!(
        mode().await.as_deref(),
        Some("force_generic_plan"),
        "the text search's setting ended with its transaction"
    );

    let mut settings = env.settings();
    let separator = if env.database_url.contains('?') {
        '&'
    } else {
        '?'
    };
    settings.database_url = format!(
        "{}{separator}options=-c%20plan_cache_mode%3Dauto",
        env.database_url
    )
    .parse()
    .expect("a database URL with options");
    let operators = env.app_with(settings).await;
    assert_eq!(
        operators.pooled_setting("plan_cache_mode").await.as_deref(),
        Some("auto"),
        "the URL's options win"
    );
}

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

#[derive(QueryableByName)]
struct Declared {
    #[diesel(sql_type = Text)]
    provolatile: String,
    #[diesel(sql_type = Text)]
    config: String,
}

/// The pages of every order, with and without a location, in ranges narrow and wide,
/// open at either end, early (their window written as numbers) and deep (their ids from
/// `listings_page_ids`), and past their end, planned generically as the server plans
/// them: the same rows in the same order, and the same count, as a plain query's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(listings_test_services), ignore = "needs PostgreSQL and Redis")]
async fn pages_whose_values_choose_their_plan_are_a_plain_querys() {
    let (_env, mut conn) = seeded().await;
    // As the server's connections plan.
    sql_query("SET plan_cache_mode = force_generic_plan")
        .execute(&mut conn)
        .await
        .expect("set plan_cache_mode");
    let orders = [
        ("price", "price ASC, id ASC"),
        ("-price", "price DESC, id DESC"),
        ("created_at", "created_at ASC, id ASC"),
        ("-created_at", "created_at DESC, id DESC"),
        ("id", "id ASC"),
        ("-id", "id DESC"),
    ];
    let ranges = [
        ("", "true"),
        (
            "&min_price=1005&max_price=1020",
            "price BETWEEN 1005 AND 1020",
        ),
        (
            "&min_price=1000&max_price=1400",
            "price BETWEEN 1000 AND 1400",
        ),
        ("&min_price=1490", "price >= 1490"),
        ("&max_price=1003.5", "price <= 1003.5"),
    ];
    let places = [("", "true"), ("&location=lamu", "location_key = 'lamu'")];
    let mut checked = 0;
    for (ordering, order_by) in orders {
        for (range, in_range) in ranges {
            for (place, in_place) in places {
                for page in [1, 3, 12, 900] {
                    let search =
                        format!("ordering={ordering}{range}{place}&page={page}&page_size=7");
                    let query = PropertyQuery::from_query_string(&search).expect("a valid search");
                    let (found, _) = pg_page_with_count(&mut conn, &query, None)
                        .await
                        .expect("the page statement runs")
                        .expect("a page, not a search by text");
                    let filter = format!("{in_range} AND {in_place}");
                    let expected: Vec<i64> = sql_query(format!(
                        "SELECT id FROM properties WHERE {filter} ORDER BY {order_by} \
                         LIMIT 7 OFFSET {}",
                        (page - 1) * 7
                    ))
                    .load::<Id>(&mut conn)
                    .await
                    .expect("the plain query runs")
                    .into_iter()
                    .map(|row| row.id)
                    .collect();
                    let ids: Vec<i64> = found.data.iter().map(|row| row.id).collect();
                    assert_eq!(ids, expected, "{search}");
                    let count: Vec<Id> = sql_query(format!(
                        "SELECT count(*) AS id FROM properties WHERE {filter}"
                    ))
                    .load(&mut conn)
                    .await
                    .expect("the plain count runs");
                    assert_eq!(
                        Some(found.count),
                        count.into_iter().map(|c| c.id).next(),
                        "{search}"
                    );
                    checked += usize::from(!ids.is_empty());
                }
            }
        }
    }
    assert!(checked > 60, "most pages have rows: {checked}");
    // Its statement reads in the snapshot of the page statement that calls it, so the
    // ids agree with the count beside them: PostgreSQL gives that to STABLE functions
    // only (a VOLATILE one would take a snapshot of its own).
    // And it plans its statement for the values, whatever the connection's mode (on
    // PostgreSQL 13, EXECUTE goes through a cached plan that the mode would make
    // generic).
    let declared: Vec<Declared> = sql_query(
        "SELECT provolatile::text, array_to_string(proconfig, ',') AS config \
         FROM pg_proc WHERE proname = 'listings_page_ids'",
    )
    .load(&mut conn)
    .await
    .expect("read pg_proc");
    let declared: Vec<(&str, &str)> = declared
        .iter()
        .map(|d| (d.provolatile.as_str(), d.config.as_str()))
        .collect();
    assert_eq!(
        declared,
        [("s", "plan_cache_mode=force_custom_plan")],
        "listings_page_ids is STABLE, and plans for the values"
    );
}
