//! The near-cache in front of Redis: a server serves ready responses from its memory
//! only while its lease says no acknowledged write has retired them. Its failure modes,
//! each with a Redis of the test's own so it can be frozen, killed or restarted: a
//! server that cannot renew its lease, one that does not confirm a bump, one that died,
//! and a Redis restart that loses the clock.
//!
//! PostgreSQL servers sharing one Redis and prefix skip each other's change
//! notifications (the writer already retired the shared cache), so these tests see the
//! lease at work and nothing else.

use std::time::{Duration, Instant};

use listings::service::NEAR_LEASE as LEASE;
use listings::test_hooks::Point;

use crate::support::binary::stderr;
use crate::support::redis_server::OwnRedis;
use crate::support::{TestEnv, create, get, router};

async fn env_with(redis: &OwnRedis) -> TestEnv {
    let mut env = TestEnv::postgres_redis().await;
    env.redis_url = Some(redis.url());
    env
}

/// Waits (bounded) until the server's lease is live: its first renewal is under way
/// when the application starts.
async fn until_served_from_memory(router: &listings::http::HttpService) {
    for _ in 0..100 {
        if get(router, "/properties/").await.x_cache() == "HIT" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the page was never served from the cache");
}

/// Redis frozen: the server keeps serving from memory while its lease lasts (Redis is
/// off the hit path), and once it has lapsed it stops, since it can no longer hear of
/// writes; pages then come from the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(not(listings_test_services), ignore = "needs PostgreSQL and Redis")]
async fn a_server_that_cannot_renew_its_lease_stops_serving_from_memory() {
    let redis = OwnRedis::start();
    let env = env_with(&redis).await;
    let app = env.app().await;
    let router = router(&app);
    create(&app, "Villa").await;
    until_served_from_memory(&router).await;

    redis.signal("-STOP");
    let frozen_at = Instant::now();
    let during = get(&router, "/properties/").await;
    if frozen_at.elapsed() < LEASE / 2 {
        assert_eq!(during.x_cache(), "HIT", "memory, with Redis frozen");
    }
    tokio::time::sleep(LEASE + Duration::from_millis(300)).await;
    let after = get(&router, "/properties/").await;
    assert_eq!(after.status, 200);
    assert_eq!(after.x_cache(), "MISS", "the lease lapsed: not from memory");
    assert_eq!(after.titles(), ["Villa"]);
    redis.signal("-CONT");
}

/// A server that does not confirm a bump (paused where it would) holds up
/// the writer's acknowledgement until its lease runs out, and by then it has stopped
/// serving from memory: no request after the acknowledgement sees the old page.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(not(listings_test_services), ignore = "needs PostgreSQL and Redis")]
async fn a_write_waits_for_a_server_that_has_not_confirmed() {
    let redis = OwnRedis::start();
    let env = env_with(&redis).await;
    let slow = env.app().await;
    let writer = env.app().await;
    let slow_router = router(&slow);
    create(&writer, "Old").await;
    until_served_from_memory(&slow_router).await;

    let stuck = slow.hooks().arm(Point::BeforeNearConfirm);
    let started = Instant::now();
    let write = tokio::spawn({
        let writer = writer.clone();
        async move { create(&writer, "New").await }
    });
    stuck.reached().await;
    write.await.expect("the write");
    let waited = started.elapsed();
    let next = get(&slow_router, "/properties/").await;
    assert_eq!(next.titles(), ["New", "Old"], "no stale page after the ack");
    stuck.release();
    eprintln!("the write waited {waited:?} for the silent server's lease");
    assert!(
        waited >= LEASE / 2,
        "the writer waited for the lease: {waited:?}"
    );
    assert!(waited < LEASE * 3, "but not for ever: {waited:?}");
}

/// A writer does not wait for its own server's confirmation: it records its bump in its
/// own mirror before the acknowledgement. With its confirmations held up, the write is
/// acknowledged at once, and the next request to that server, still within its lease,
/// does not get the old page from memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(not(listings_test_services), ignore = "needs PostgreSQL and Redis")]
async fn a_writer_does_not_wait_for_its_own_confirmation() {
    let redis = OwnRedis::start();
    let env = env_with(&redis).await;
    let app = env.app().await;
    let router = router(&app);
    create(&app, "Old").await;
    until_served_from_memory(&router).await;

    let stuck = app.hooks().arm(Point::BeforeNearConfirm);
    let started = Instant::now();
    create(&app, "New").await;
    let waited = started.elapsed();
    let next = get(&router, "/properties/").await;
    let still_live = started.elapsed() < LEASE / 2;
    stuck.reached().await;
    stuck.release();
    assert_eq!(next.titles(), ["New", "Old"], "no stale page after the ack");
    assert!(
        waited < LEASE / 2,
        "the writer did not wait for its own lease: {waited:?}"
    );
    if still_live {
        assert_eq!(next.x_cache(), "MISS", "retired in memory, then rendered");
    }
}

/// A server killed with its lease live: writers wait for the lease to run out, then go
/// on; the dead server's lease is forgotten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(listings_test_services), ignore = "needs PostgreSQL and Redis")]
async fn a_writer_does_not_wait_for_ever_on_a_server_that_died() {
    let redis = OwnRedis::start();
    let env = env_with(&redis).await;
    let server = env.serve(&[]);
    assert!(env.create_via_cli("Old", "1", "Lamu").status.success());
    for _ in 0..50 {
        if server.get("/properties/").await.x_cache == "HIT" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let client = redis::Client::open(redis.url()).expect("URL");
    let mut conn = client.get_connection().expect("connect");
    let registry_key = format!("{{{}}}near", env.cache_prefix);
    let registry = |conn: &mut redis::Connection| -> std::collections::HashMap<String, String> {
        redis::cmd("HGETALL")
            .arg(&registry_key)
            .query(conn)
            .expect("registry")
    };
    assert!(
        registry(&mut conn)
            .keys()
            .any(|field| field.starts_with("lease:")),
        "the live server holds a lease"
    );
    drop(server); // SIGKILL: no goodbye to Redis

    let started = Instant::now();
    let created = env.create_via_cli("New", "2", "Lamu");
    let waited = started.elapsed();
    assert!(created.status.success(), "{}", stderr(&created));
    assert!(waited < LEASE * 3, "the writer went on: {waited:?}");
    let left = registry(&mut conn);
    assert!(
        !left
            .keys()
            .any(|field| field.starts_with("lease:") || field.starts_with("ack:")),
        "the dead server's lease is gone: {left:?}"
    );

    let fresh = env.serve(&[]);
    assert_eq!(fresh.get("/properties/").await.titles(), ["New", "Old"]);
}

/// Redis restarted empty: the servers' subscriptions break, so they stop serving from
/// memory at once, and the clock's sequence starts again above every earlier one; a write
/// right after is seen by the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(not(listings_test_services), ignore = "needs PostgreSQL and Redis")]
async fn a_redis_restart_that_loses_the_clock_serves_nothing_old() {
    let mut redis = OwnRedis::start();
    let env = env_with(&redis).await;
    let server = env.app().await;
    let server_router = router(&server);
    create(&server, "Old").await;
    until_served_from_memory(&server_router).await;

    redis.restart();
    let writer = listings::service::App::connect(env.settings())
        .await
        .expect("writer");
    listings::service::properties::create_property(
        &writer,
        &crate::support::new_property("New", "2.00", "Lamu"),
    )
    .await
    .expect("write after the restart");
    let next = get(&server_router, "/properties/").await;
    assert_eq!(next.titles(), ["New", "Old"]);
    until_served_from_memory(&server_router).await;
    assert_eq!(
        get(&server_router, "/properties/").await.titles(),
        ["New", "Old"],
        "served from memory again, and current"
    );
}
