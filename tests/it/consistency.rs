//! The races behind stale caches, reproduced with pause points and shown closed.

use std::time::Duration;

use listings::metrics::CacheKind;
use listings::service::App;
use listings::test_hooks::Point;

use crate::every_redis;
use crate::support::redis_server::OwnRedis;
use crate::support::{TestEnv, create, get, get_paused_before_store, router};

every_redis!(
    slow_reader_cannot_store_pre_write_data,
    invalidation_runs_after_commit,
    writes_by_another_process_are_seen
);

/// A reader loads the list, a write commits and invalidates, then the reader stores its
/// (now old) result. Its stamp must keep that store from being served.
async fn slow_reader_cannot_store_pre_write_data(env: TestEnv) {
    let app = env.app().await;
    let router = router(&app);
    create(&app, "Old").await;

    let (pause, slow_reader) = get_paused_before_store(&app, &router, "/properties/").await;
    create(&app, "New").await;
    pause.release();
    let slow = slow_reader.await.expect("reader");
    assert_eq!(slow.titles(), ["Old"], "the reader began before the write");

    let next = get(&router, "/properties/").await;
    assert_eq!(
        next.titles(),
        ["New", "Old"],
        "the slow reader's late store was refused"
    );
    assert_eq!(next.x_cache(), "MISS");
    assert_eq!(get(&router, "/properties/").await.titles(), ["New", "Old"]);
}

/// While a write is paused between its commit and its invalidation, a reader on another
/// connection already sees the row in the database: the invalidation cannot come before
/// the commit, so no reader can refill the cache with the pre-commit state after it.
async fn invalidation_runs_after_commit(env: TestEnv) {
    let app = env.app().await;
    let router = router(&app);
    create(&app, "Old").await;
    assert_eq!(get(&router, "/properties/").await.titles(), ["Old"]);

    let pause = app.hooks().arm(Point::BeforeInvalidate);
    let writer = tokio::spawn({
        let app = app.clone();
        async move { create(&app, "New").await }
    });
    pause.reached().await;
    let mut uncached = env.settings();
    uncached.redis_url = None;
    let other_reader = App::connect(uncached).await.expect("reader app");
    let (in_database, _) =
        listings::service::properties::list_properties(&other_reader, &Default::default())
            .await
            .expect("list");
    let titles: Vec<_> = in_database
        .page
        .data
        .iter()
        .map(|p| p.title.as_str())
        .collect();
    assert_eq!(titles, ["New", "Old"], "committed before invalidating");
    pause.release();
    writer.await.expect("writer");
    let after = get(&router, "/properties/").await;
    assert_eq!(after.titles(), ["New", "Old"]);
    assert_eq!(after.x_cache(), "MISS");
}

/// A second application on the same database and cache stands for another process
/// (the CLI, a second server): its commit must reach the first one's next request.
async fn writes_by_another_process_are_seen(env: TestEnv) {
    let server = env.app().await;
    let router = router(&server);
    create(&server, "Villa").await;
    assert_eq!(get(&router, "/properties/").await.titles(), ["Villa"]);
    assert_eq!(get(&router, "/properties/").await.x_cache(), "HIT");

    let other_process = App::connect(env.settings()).await.expect("second app");
    create(&other_process, "Flat").await;

    let next = get(&router, "/properties/").await;
    assert_eq!(next.x_cache(), "MISS");
    assert_eq!(next.titles(), ["Flat", "Villa"]);
}

/// A Redis that does not answer: reads come from the database, nothing fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_redis_only_slows_requests() {
    let mut env = TestEnv::embedded();
    env.redis_url = Some("redis://127.0.0.1:1/".into());
    let app = env.app().await;
    let router = router(&app);
    create(&app, "Villa").await;
    for _ in 0..2 {
        let response = get(&router, "/properties/").await;
        assert_eq!(response.status, 200);
        assert_eq!(response.x_cache(), "MISS");
        assert_eq!(response.titles(), ["Villa"]);
    }
    assert!(app.metrics.cache_errors() >= 1);
}

/// A Redis of the test's own, frozen and thawed: a write whose invalidation could not
/// reach Redis must not let the entries cached before the outage be served after it.
/// With a Sentinel set the master is frozen (the sentinel may fail over meanwhile); in
/// a cluster, the master holding the clock.
mod entries_from_before_a_redis_outage_are_not_served_after_it {
    use super::*;
    use crate::support::redis_server::{RedisCluster, SentinelSet};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[cfg_attr(not(listings_test_services), ignore = "needs PostgreSQL and Redis")]
    async fn single() {
        let redis = OwnRedis::start();
        let pid = redis.pid();
        outage(redis.url(), pid).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[cfg_attr(not(listings_test_services), ignore = "needs PostgreSQL and Redis")]
    async fn sentinel() {
        let mut set = tokio::task::spawn_blocking(SentinelSet::start)
            .await
            .expect("Sentinel set");
        let pid = set.master().pid();
        outage(set.url(), pid).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[cfg_attr(not(listings_test_services), ignore = "needs PostgreSQL and Redis")]
    async fn cluster() {
        let mut cluster = tokio::task::spawn_blocking(RedisCluster::start)
            .await
            .expect("Redis Cluster");
        let url = cluster.url();
        let pid = cluster.node_of(&clock_key()).pid();
        outage(url, pid).await;
    }

    fn clock_key() -> String {
        format!("{{{}}}properties:clock", PREFIX)
    }

    const PREFIX: &str = "outage-test:";

    async fn outage(redis_url: String, redis_pid: u32) {
        let signal = |signal: &str| {
            let sent = std::process::Command::new("kill")
                .args([signal, &redis_pid.to_string()])
                .status()
                .expect("kill");
            assert!(sent.success());
        };
        let mut env = TestEnv::embedded();
        env.redis_url = Some(redis_url);
        env.cache_prefix = PREFIX.to_owned();
        let settings = env.settings();
        // No SQLite watch: only the Redis failure policy may save this test.
        let app = std::sync::Arc::new(App::connect(settings).await.expect("app"));
        let router = router(&app);
        create(&app, "Old").await;
        assert_eq!(get(&router, "/properties/").await.x_cache(), "MISS");
        assert_eq!(get(&router, "/properties/").await.x_cache(), "HIT");

        signal("-STOP");
        create(&app, "New").await; // its invalidation times out
        let during = get(&router, "/properties/").await;
        assert_eq!(
            during.titles(),
            ["New", "Old"],
            "served from the database during the outage"
        );
        signal("-CONT");

        // Past the breaker's pause, Redis is used again, but only after a resync.
        let mut after = get(&router, "/properties/").await;
        for _ in 0..100 {
            if after.x_cache() == "HIT" {
                break;
            }
            assert_eq!(after.titles(), ["New", "Old"]);
            tokio::time::sleep(Duration::from_millis(100)).await;
            after = get(&router, "/properties/").await;
        }
        assert_eq!(
            after.x_cache(),
            "HIT",
            "Redis is used again after it recovers"
        );
        assert_eq!(
            after.titles(),
            ["New", "Old"],
            "never the entry cached before the outage"
        );
        assert!(app.metrics.cache_errors() >= 1);
        assert!(app.metrics.cache(CacheKind::View).hits >= 2);
    }
}

/// SQLite + Redis: a server that was down while the file changed (here: a raw SQL
/// write, like a CLI whose Redis invalidation failed) must not trust the entries it
/// left in Redis when it starts again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(listings_test_services), ignore = "needs PostgreSQL and Redis")]
async fn a_starting_sqlite_server_retires_what_it_could_not_watch() {
    let redis = OwnRedis::start();
    let mut env = TestEnv::embedded();
    env.redis_url = Some(redis.url());
    let before = env.app().await;
    create(&before, "Villa").await;
    assert_eq!(
        get(&router(&before), "/properties/").await.titles(),
        ["Villa"]
    );
    assert_eq!(get(&router(&before), "/properties/").await.x_cache(), "HIT");
    drop(before);

    let mut sqlite = <diesel::SqliteConnection as diesel::Connection>::establish(&env.database_url)
        .expect("open");
    diesel::RunQueryDsl::execute(
        diesel::sql_query("UPDATE properties SET title = 'Changed offline'"),
        &mut sqlite,
    )
    .expect("update");

    let restarted = env.app().await;
    let response = get(&router(&restarted), "/properties/").await;
    assert_eq!(response.titles(), ["Changed offline"]);
    assert_eq!(response.x_cache(), "MISS");
}
