//! The embedded default used the way people use it: requests cancelled midway, a panic
//! while a request is handled, and writes while Redis is gone. None of them may leave a
//! connection that fails a later request, kill the server, or flood the log.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use listings::config::DbSettings;
use listings::config::Settings;
use listings::test_hooks::{PANIC_ONCE_ENV, Point};
use serde_json::{Value, json};

use crate::both_modes;
use crate::support::binary::Server;
use crate::support::{TestEnv, get, router, run_sql_elsewhere, write};

/// A read whose request is dropped while SQLite runs its statement on a blocking
/// thread. diesel-async's SQLite wrapper cannot be stopped there: dropping its future
/// blocks the dropping thread until the statement ends (and panics on a one-thread
/// runtime, `--workers 1`, leaving a pooled connection that panicked on its next use).
/// The request must go away at once, the next request must be served while the
/// abandoned statement still runs, and every later request must work.
async fn a_read_cancelled_inside_sqlite_leaves_nothing_broken() {
    let env = TestEnv::embedded();
    let settings = Settings {
        db: DbSettings {
            max_connections: 2,
            ..env.settings().db
        },
        ..env.settings()
    };
    let app = env.app_with(settings).await;
    let router = Arc::new(router(&app));
    let pause = app.hooks().arm(Point::InsideSqliteCall);
    let cancelled = tokio::spawn({
        let router = router.clone();
        async move { get(&router, "/properties/?search=first").await }
    });
    pause.reached().await;
    cancelled.abort();
    let gone = tokio::time::timeout(Duration::from_secs(5), cancelled)
        .await
        .expect("the dropped request goes away at once");
    assert!(gone.is_err_and(|e| e.is_cancelled()));

    let next = tokio::time::timeout(
        Duration::from_secs(5),
        get(&router, "/properties/?search=second"),
    )
    .await
    .expect("the next read is not stuck behind the abandoned one");
    assert_eq!(next.status, StatusCode::OK, "{:?}", next.body);
    pause.release();

    for i in 0..20 {
        let created = write(
            &router,
            "POST",
            "/properties/",
            json!({"title": format!("Flat {i}"), "price": "10.00", "location": "Nairobi"}),
        )
        .await;
        assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
        let page = get(
            &router,
            &format!("/properties/?search=flat&page_size={}", i + 1),
        )
        .await;
        assert_eq!(page.status, StatusCode::OK, "{:?}", page.body);
        assert_eq!(page.json()["count"], i + 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_cancelled_inside_sqlite_leaves_nothing_broken_on_many_threads() {
    a_read_cancelled_inside_sqlite_leaves_nothing_broken().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_read_cancelled_inside_sqlite_leaves_nothing_broken_on_one_thread() {
    a_read_cancelled_inside_sqlite_leaves_nothing_broken().await;
}

/// A SQLite write stuck inside its transaction past its deadline (the pool timeout, the
/// busy timeout and the statement timeout) is answered 503 at the deadline, and rolls
/// back when it goes on: it was never acknowledged, so it must not land. The write
/// connection is then free for the next write.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sqlite_write_past_its_deadline_is_answered_503_and_rolls_back() {
    let env = TestEnv::embedded();
    let settings = Settings {
        db: DbSettings {
            pool_timeout: Duration::from_millis(200),
            statement_timeout: Duration::from_millis(300),
            ..env.settings().db
        },
        ..env.settings()
    };
    let app = env.app_with(settings).await;
    let router = Arc::new(router(&app));
    let body = json!({"title": "Flat", "price": "10.00", "location": "Nairobi"});
    let pause = app.hooks().arm(Point::InsideSqliteWrite);
    let stuck = tokio::spawn({
        let (router, body) = (router.clone(), body.clone());
        async move { write(&router, "POST", "/properties/", body).await }
    });
    pause.reached().await;
    let answered = tokio::time::timeout(Duration::from_secs(5), stuck)
        .await
        .expect("answered at the deadline, not when the write goes on")
        .expect("the request task");
    assert_eq!(
        answered.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{:?}",
        answered.body
    );
    assert!(answered.json()["error"].is_string(), "{:?}", answered.body);
    pause.release();

    let created = write(&router, "POST", "/properties/", body).await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let page = get(&router, "/properties/").await;
    assert_eq!(
        page.json()["count"],
        1,
        "the abandoned write rolled back: {:?}",
        page.body
    );
}

/// A write task that panics (before it writes) is answered 500 with the JSON error
/// body, writes nothing, and the next request is served as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_panicking_write_is_answered_500_and_writes_nothing() {
    let env = TestEnv::embedded();
    let app = env.app().await;
    let router = router(&app);
    app.hooks().arm_panic(Point::InService);
    let body = json!({"title": "Flat", "price": "10.00", "location": "Nairobi"});
    let failed = write(&router, "POST", "/properties/", body.clone()).await;
    assert_eq!(failed.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(failed.json()["error"].is_string(), "{:?}", failed.body);
    assert_eq!(get(&router, "/properties/").await.json()["count"], 0);
    let created = write(&router, "POST", "/properties/", body.clone()).await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert_eq!(get(&router, "/properties/").await.json()["count"], 1);
}

/// The real server: a panic while a read is handled is logged once, as one JSON line
/// carrying the request's id, the client gets one 500 with a JSON body, and the server
/// keeps serving on the same and on new connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_a_request_is_logged_with_its_id_and_answered_500_once() {
    let env = TestEnv::embedded();
    let mut command = env.command(&["serve", "--bind", "127.0.0.1:0", "--log-format", "json"]);
    command.env(PANIC_ONCE_ENV, "1");
    let server = Server::start(command);
    let (status, body) = server.send("GET", "/properties/", None);
    assert_eq!(status, 500, "{body}");
    let error: Value = serde_json::from_str(&body).expect("a JSON error body");
    assert!(error["error"].is_string(), "{body}");
    let log = server.wait_for_log("\"status\":500").await;
    let lines: Vec<Value> = log
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    let panics: Vec<&Value> = lines
        .iter()
        .filter(|line| line["message"] == "panicked")
        .collect();
    assert_eq!(panics.len(), 1, "one panic line: {log}");
    assert_eq!(panics[0]["level"], "ERROR");
    assert!(
        panics[0]["panic"]
            .as_str()
            .is_some_and(|m| m.contains("test-only panic")),
        "{log}"
    );
    let access = lines
        .iter()
        .find(|line| line["target"] == "listings::access" && line["status"] == 500)
        .expect("the access line of the 500");
    assert_eq!(
        panics[0]["span"]["request_id"], access["request_id"],
        "the panic line names the request: {log}"
    );
    assert!(
        !log.contains("thread '"),
        "no raw panic output on stderr: {log}"
    );

    for _ in 0..3 {
        let response = server.get("/properties/").await;
        assert_eq!(response.status, 200);
    }
    assert!(server.log().matches("\"message\":\"panicked\"").count() == 1);
}

/// With Redis unreachable every write's invalidation fails; 100 writes add a few
/// throttled WARN lines, each counting the ones held back, not 100.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_failures_to_reach_the_cache_are_logged_throttled() {
    let mut env = TestEnv::embedded();
    // A port nothing listens on: every Redis call fails at once.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("address").port();
    drop(closed);
    env.redis_url = Some(format!("redis://127.0.0.1:{port}/"));
    let server = env.serve_writable(&[]);
    let started = std::time::Instant::now();
    for i in 0..100 {
        let (status, body) = server.post_json(
            "/properties/",
            &json!({"title": format!("Flat {i}"), "price": "10.00", "location": "Nairobi"}),
        );
        assert_eq!(status, 201, "{body}");
    }
    let elapsed = started.elapsed();
    assert_eq!(
        server.get("/properties/?search=end-of-writes").await.json()["count"],
        0
    );
    let log = server.wait_for_log("end-of-writes").await;
    let warned: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("could not be reached to invalidate it"))
        .collect();
    assert!(!warned.is_empty(), "the failure is logged: {log}");
    // One line, then at most one per 5 s.
    let allowed = 1 + (elapsed.as_secs() / 5) as usize + 1;
    assert!(
        warned.len() <= allowed,
        "{} lines in {elapsed:?}:\n{}",
        warned.len(),
        warned.join("\n")
    );
    assert_eq!(server.get("/properties/").await.json()["count"], 100);
    assert!(
        warned
            .iter()
            .skip(1)
            .all(|line| line.contains("suppressed")),
        "later lines count what was held back"
    );
}

/// What SQLite and the process hold is in `/metrics`, for the memory bounds the README
/// states.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_sqlite_and_resident_memory() {
    let env = TestEnv::embedded();
    let app = env.app().await;
    let router = router(&app);
    assert_eq!(
        get(&router, "/properties/?location=nairobi").await.status,
        StatusCode::OK
    );
    let metrics = get(&router, "/metrics").await;
    let text = String::from_utf8_lossy(&metrics.body);
    for gauge in [
        "listings_sqlite_memory_bytes",
        "process_resident_memory_bytes",
    ] {
        let value = listings::metrics::parse_prometheus_sample(&text, gauge)
            .unwrap_or_else(|| panic!("{gauge} in {text}"));
        assert!(value > 0, "{gauge} = {value}");
        assert!(text.contains(&format!("# TYPE {gauge} gauge")));
    }
}

both_modes!(location_keys_follow_writes_from_elsewhere_and_keep_the_applications);

/// Another program's writes (plain SQL, without `location_key`) get a key from the
/// triggers, so location filters find them; a case-only rename by the application keeps
/// the application's key.
async fn location_keys_follow_writes_from_elsewhere_and_keep_the_applications(env: TestEnv) {
    let app = env.app().await;
    let router = router(&app);
    let statements = [
        "INSERT INTO properties (title, price, location) VALUES ('From elsewhere', 5, 'Nairobi')",
        "UPDATE properties SET location = 'Mombasa' WHERE title = 'From elsewhere'",
    ];
    let created = write(
        &router,
        "POST",
        "/properties/",
        json!({"title": "Own", "price": "10.00", "location": "Éldoret"}),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let id = created.json()["id"].as_i64().expect("id");
    for (statement, location) in statements.into_iter().zip(["nairobi", "mombasa"]) {
        run_sql_elsewhere(&env, statement).await;
        app.notice_other_writers().await;
        let page = wait_for_count(&router, &format!("/properties/?location={location}"), 1).await;
        assert_eq!(page["data"][0]["title"], "From elsewhere", "{page}");
    }
    let renamed = write(
        &router,
        "PATCH",
        &format!("/properties/{id}/"),
        json!({"location": "ÉLDORET"}),
    )
    .await;
    assert_eq!(renamed.status, StatusCode::OK, "{:?}", renamed.body);
    let page = get(&router, "/properties/?location=%C3%A9ldoret").await;
    assert_eq!(page.json()["count"], 1, "{:?}", page.body);
}

/// Polls `path` (bounded: 2 s; PostgreSQL's notification may take a moment) until it
/// counts `count` rows; returns the page.
async fn wait_for_count(router: &listings::http::HttpService, path: &str, count: i64) -> Value {
    let mut page = Value::Null;
    for _ in 0..100 {
        page = get(router, path).await.json();
        if page["count"] == count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    page
}
