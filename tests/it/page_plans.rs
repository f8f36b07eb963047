//! On PostgreSQL a page statement is planned once per connection where its plan does
//! not depend on the filter's values (its window written as numbers, so that the
//! generic plan is the custom one), and left to PostgreSQL's choice where it does (a
//! price range ordered newest first, a location ordered by id).

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
    #[diesel(sql_type = BigInt)]
    custom_plans: i64,
}

/// The page statements prepared on `conn`.
async fn prepared(conn: &mut AsyncPgConnection) -> Vec<Prepared> {
    sql_query(
        "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements \
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(listings_test_services), ignore = "needs PostgreSQL and Redis")]
async fn page_statements_are_planned_once_unless_the_values_choose_the_plan() {
    let env = TestEnv::postgres_redis().await;
    // Migrates the database.
    env.app().await;
    // Enough rows that a plan for a tenth of them (what PostgreSQL assumes of a
    // parameter LIMIT) costs more than the custom plans: then a page whose window is a
    // parameter keeps being planned for its values.
    run_sql_elsewhere(
        &env,
        "INSERT INTO properties (title, price, location, created_at) \
         SELECT 'Row ' || i, 1000 + i % 500, (ARRAY['Lamu', 'Thika'])[1 + i % 2], \
                now() - i * interval '1 minute' \
         FROM generate_series(1, 20000) AS i",
    )
    .await;
    run_sql_elsewhere(&env, "ANALYZE properties").await;
    let mut conn = AsyncPgConnection::establish(&env.database_url)
        .await
        .expect("connect");
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
    // The plan of a price range newest first depends on the range, and that of a
    // location by id on the location: their windows stay parameters, and the choice
    // PostgreSQL's.
    one(&all, "a price range newest first", |s| {
        s.contains(&format!("{NEWEST} $")) && s.contains("price <= $")
    });
    one(&all, "a location by id", |s| {
        s.contains("ORDER BY properties.id ASC LIMIT $")
    });
    let deep = one(&all, "a deep page, its window a parameter", |s| {
        s.contains(&format!("{NEWEST} $")) && !s.contains("price <= $")
    });
    assert_eq!(
        (deep.generic_plans, deep.custom_plans),
        (0, 8),
        "with its window a parameter, a page is planned every time: {deep:?}"
    );
}
