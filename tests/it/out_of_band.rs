//! Writes made outside the application (psql, another program) reach PostgreSQL-backed
//! servers through the trigger's NOTIFY, and a gap in listening retires everything.

use diesel::sql_query;
use diesel_async::{AsyncConnection as _, AsyncPgConnection, RunQueryDsl as _};
use listings::service::change_listener::APPLICATION_NAME;
use listings::test_hooks::Point;

use crate::support::{TestEnv, create, get, router, wait_until};

async fn psql(env: &TestEnv, statement: &str) {
    let mut conn = AsyncPgConnection::establish(&env.database_url)
        .await
        .expect("connect");
    sql_query(statement)
        .execute(&mut conn)
        .await
        .expect(statement);
}

/// The real server, with Redis and with the in-process cache: an UPDATE by plain SQL
/// shows on a later GET within the notification's delivery (polled up to 2 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(listings_test_services), ignore = "needs PostgreSQL and Redis")]
async fn sql_update_outside_the_application_reaches_the_server() {
    let mut env = TestEnv::postgres_redis().await;
    let redis_url = env.redis_url.clone();
    for (cache, redis) in [("Redis", redis_url), ("in-process", None)] {
        env.redis_url = redis;
        let server = env.serve(&[]);
        let title = format!("Changed by psql ({cache})");
        let created = env.create_via_cli("Villa", "1", "Lamu");
        assert!(created.status.success());
        // The in-process server hears of the command's create by its notification,
        // which may retire a page cached before it arrived: wait for a settled hit.
        let mut cached = server.get("/properties/").await;
        for _ in 0..100 {
            cached = server.get("/properties/").await;
            if cached.x_cache == "HIT" && cached.titles() == ["Villa"] {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(
            (cached.status, cached.x_cache.as_str(), cached.titles()),
            (200, "HIT", vec!["Villa".to_owned()]),
            "{cache}"
        );

        psql(&env, &format!("UPDATE properties SET title = '{title}'")).await;
        let titles = server
            .wait_for_titles("/properties/", |t| t == [title.as_str()])
            .await;
        assert_eq!(
            titles,
            [title.as_str()],
            "{cache}: the out-of-band UPDATE never showed:\n{}",
            server.log()
        );
        psql(&env, "DELETE FROM properties").await;
    }
}

/// While the listener is disconnected no notification is heard; when it reconnects it
/// must retire everything, since it cannot know what it missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(listings_test_services), ignore = "needs PostgreSQL and Redis")]
async fn a_gap_in_listening_retires_everything() {
    let env = TestEnv::postgres_redis().await;
    let app = env.app().await;
    let router = router(&app);
    create(&app, "Villa").await;
    assert_eq!(get(&router, "/properties/").await.titles(), ["Villa"]);
    assert_eq!(get(&router, "/properties/").await.x_cache(), "HIT");

    let reconnecting = app.hooks().arm(Point::BeforeListen);
    psql(
        &env,
        &format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = '{APPLICATION_NAME}' AND datname = current_database()"
        ),
    )
    .await;
    reconnecting.reached().await;
    // Nobody listens now: this change's notification is lost.
    psql(
        &env,
        "UPDATE properties SET title = 'Changed while nobody listened'",
    )
    .await;
    reconnecting.release();
    wait_until(
        || app.metrics.listener_connects() >= 2,
        "the listener reconnects",
    )
    .await;

    let after = get(&router, "/properties/").await;
    assert_eq!(after.titles(), ["Changed while nobody listened"]);
    assert_eq!(after.x_cache(), "MISS");
}

/// A CLI that cannot reach Redis still commits; its failed invalidation must not leave
/// the servers (which can reach Redis, and skip notifications of the application's own
/// writes) serving the old list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(listings_test_services), ignore = "needs PostgreSQL and Redis")]
async fn a_write_whose_invalidation_missed_redis_still_reaches_the_servers() {
    let mut env = TestEnv::postgres_redis().await;
    let server = env.serve(&[]);
    assert_eq!(server.get("/properties/").await.x_cache, "MISS");
    assert_eq!(server.get("/properties/").await.x_cache, "HIT");

    let shared_redis = env.redis_url.replace("redis://127.0.0.1:1/".into());
    let created = env.create_via_cli("Villa", "1", "Lamu");
    env.redis_url = shared_redis;
    assert!(created.status.success(), "the write itself succeeds");
    assert!(crate::support::binary::stderr(&created).contains("could not be reached"));

    let titles = server
        .wait_for_titles("/properties/", |t| t == ["Villa"])
        .await;
    assert_eq!(titles, ["Villa"], "{}", server.log());
}

/// A writer that does not share the servers' cache (no REDIS_URL, or another prefix)
/// invalidates only its own; its notification must not be mistaken for one the
/// servers' cache already heard of.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(listings_test_services), ignore = "needs PostgreSQL and Redis")]
async fn a_writer_with_another_cache_still_reaches_the_servers() {
    let mut env = TestEnv::postgres_redis().await;
    let server = env.serve(&[]);
    assert_eq!(server.get("/properties/").await.x_cache, "MISS");
    assert_eq!(server.get("/properties/").await.x_cache, "HIT");
    // Under the test's own prefix, so its clean-up removes it too.
    let elsewhere = format!("{}elsewhere:", env.cache_prefix);
    for (redis, prefix, title) in [
        (None, None, "Written without Redis"),
        (env.redis_url.clone(), Some(elsewhere), "Other prefix"),
    ] {
        let (shared_redis, shared_prefix) = (env.redis_url.clone(), env.cache_prefix.clone());
        env.redis_url = redis;
        if let Some(prefix) = prefix {
            env.cache_prefix = prefix;
        }
        let created = env.create_via_cli(title, "1", "Lamu");
        (env.redis_url, env.cache_prefix) = (shared_redis, shared_prefix);
        assert!(
            created.status.success(),
            "{}",
            crate::support::binary::stderr(&created)
        );
        let titles = server
            .wait_for_titles("/properties/?ordering=id", |t| t.iter().any(|t| t == title))
            .await;
        assert!(
            titles.iter().any(|t| t == title),
            "{titles:?}\n{}",
            server.log()
        );
    }
}
