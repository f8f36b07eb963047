//! After an invalidation, a crowd of identical requests causes one database load per
//! key: one per process in-process (single flight), one in total with Redis (leases);
//! and a load abandoned midway leaves no lease behind for the others to wait out.

use std::sync::Arc;

use listings::http::HttpService;
use listings::service::App;
use tokio::task::JoinSet;

use crate::every_redis;
use crate::support::{TestEnv, create, get, get_paused_before_store, router};

every_redis!(
    one_load_after_an_invalidation,
    one_load_across_processes_with_redis
);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(not(listings_test_services), ignore = "needs PostgreSQL and Redis")]
async fn an_abandoned_load_releases_its_fill_locks_at_once() {
    an_abandoned_load_releases_its_fill_locks(TestEnv::postgres_redis().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(not(listings_test_services), ignore = "needs PostgreSQL and Redis")]
async fn requests_abandoned_at_any_moment_leave_no_fill_lock() {
    requests_abandoned_anywhere_leave_no_fill_lock(TestEnv::postgres_redis().await).await;
}

/// Fires `count` concurrent GETs at each router; returns every response's titles and
/// X-Cache.
async fn crowd(routers: &[HttpService], count: usize) -> Vec<(Vec<String>, String)> {
    let mut requests = JoinSet::new();
    for router in routers {
        for _ in 0..count {
            let router = router.clone();
            requests.spawn(async move {
                let response = get(&router, "/properties/").await;
                assert_eq!(response.status, 200);
                (response.titles(), response.x_cache().to_owned())
            });
        }
    }
    requests.join_all().await
}

fn db_queries(apps: &[&Arc<App>]) -> u64 {
    apps.iter().map(|app| app.metrics.db_queries()).sum()
}

async fn one_load_after_an_invalidation(env: TestEnv) {
    let app = env.app().await;
    let router = router(&app);
    create(&app, "Villa").await;
    app.notice_other_writers().await;
    let before_single_load = db_queries(&[&app]);
    assert_eq!(get(&router, "/properties/").await.x_cache(), "MISS");
    let one_load = db_queries(&[&app]) - before_single_load;
    create(&app, "Flat").await;
    // In the embedded mode the server also notices the commit through SQLite; let it
    // do so now, so the crowd below meets one settled invalidation.
    app.notice_other_writers().await;

    let before = db_queries(&[&app]);
    let responses = crowd(std::slice::from_ref(&router), 200).await;
    assert_eq!(
        db_queries(&[&app]) - before,
        one_load,
        "200 concurrent misses, one database load"
    );
    assert!(
        responses
            .iter()
            .all(|(titles, _)| titles == &["Flat", "Villa"])
    );
    let rendered = responses
        .iter()
        .filter(|(_, x_cache)| x_cache == "MISS")
        .count();
    assert_eq!(
        rendered, 1,
        "one request rendered, the others shared its response"
    );
}

/// Two applications stand for two server processes. With Redis the fill lock makes
/// one of them load while the other waits for its value; in-process caches load once
/// each.
async fn one_load_across_processes_with_redis(env: TestEnv) {
    let first = env.app().await;
    let second = env.app().await;
    create(&first, "Villa").await;
    first.notice_other_writers().await;
    let before_single_load = db_queries(&[&first]);
    get(&router(&first), "/properties/?page_size=7").await;
    let one_load = db_queries(&[&first]) - before_single_load;
    create(&first, "Flat").await;
    first.notice_other_writers().await;
    second.notice_other_writers().await;

    let before = db_queries(&[&first, &second]);
    let responses = crowd(&[router(&first), router(&second)], 100).await;
    let queries = db_queries(&[&first, &second]) - before;
    let expected_loads = if env.is_redis() { 1 } else { 2 };
    assert_eq!(
        queries,
        expected_loads * one_load,
        "database loads for 200 requests over two processes"
    );
    assert!(
        responses
            .iter()
            .all(|(titles, _)| titles == &["Flat", "Villa"])
    );
}

/// The fill locks (`…:fill`) under this test's key prefix, with what is left of each.
pub(crate) async fn fill_locks(env: &TestEnv) -> Vec<(String, i64)> {
    let client = redis::Client::open(env.redis_url.clone().expect("Redis")).expect("URL");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to Redis");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*:fill", env.cache_prefix))
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    let mut locks = Vec::new();
    for key in keys {
        let left: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .expect("PTTL");
        locks.push((key, left));
    }
    locks
}

/// A request paused between its load and its store holds the fill locks of its page
/// (view and data); when its future is dropped there (a client gone, a task aborted),
/// the locks go with it, long before they would run out, and another process loads at
/// once.
async fn an_abandoned_load_releases_its_fill_locks(env: TestEnv) {
    let abandoning = env.app().await;
    let other = env.app().await;
    create(&abandoning, "Villa").await;
    let page = "/properties/?page_size=3";
    let (pause, load) = get_paused_before_store(&abandoning, &router(&abandoning), page).await;
    let held = fill_locks(&env).await;
    assert_eq!(held.len(), 2, "the view's and the data's: {held:?}");
    assert!(held.iter().all(|(_, left)| *left > 1000), "{held:?}");

    load.abort();
    assert!(load.await.is_err_and(|e| e.is_cancelled()));
    pause.release();
    // Released by a task the drop spawns: moments, where running out takes 2 s.
    let left = wait_for_no_fill_locks(&env).await;
    assert!(left.is_empty(), "fill locks left behind: {left:?}");
    let before = db_queries(&[&other]);
    let answered = get(&router(&other), page).await;
    assert_eq!(answered.titles(), ["Villa"]);
    assert_eq!(answered.x_cache(), "MISS");
    assert!(db_queries(&[&other]) > before, "the other process loaded");
}

/// Waits (at most a second: a lock left behind would stay twice as long) until no fill
/// lock of this test's prefix is left.
async fn wait_for_no_fill_locks(env: &TestEnv) -> Vec<(String, i64)> {
    let mut left = fill_locks(env).await;
    for _ in 0..100 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        left = fill_locks(env).await;
    }
    left
}

/// Requests for pages a write has just retired, each dropped after a moment of its own
/// (anywhere: looking up, taking a lock, loading, storing), as clients that hang up do;
/// afterwards no fill lock may be left for others to wait out.
async fn requests_abandoned_anywhere_leave_no_fill_lock(env: TestEnv) {
    use rand::Rng as _;
    let app = env.app().await;
    let router = router(&app);
    for round in 0..20 {
        create(&app, &format!("Villa {round}")).await;
        let mut requests = JoinSet::new();
        for i in 0..16 {
            let router = router.clone();
            let wait = std::time::Duration::from_micros(rand::rng().random_range(0..4000));
            requests.spawn(async move {
                let page = format!("/properties/?page_size={}", 1 + i % 4);
                let _ = tokio::time::timeout(wait, get(&router, &page)).await;
            });
        }
        while requests.join_next().await.is_some() {}
    }
    let left = wait_for_no_fill_locks(&env).await;
    assert!(left.is_empty(), "fill locks left behind: {left:?}");
}
