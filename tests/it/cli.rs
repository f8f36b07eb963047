//! The admin commands as operators run them: exit statuses, messages, and what they
//! leave in the database.

use crate::both_modes;
use crate::support::TestEnv;
use crate::support::binary::{stderr, stdout};

both_modes!(create_property_rejects_bad_input_and_writes_nothing);
both_modes!(the_start_up_line_tells_how_many_read_connections);

async fn create_property_rejects_bad_input_and_writes_nothing(env: TestEnv) {
    let long_title = "x".repeat(201);
    let long_location = "y".repeat(101);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--title", "", "--price", "1", "--location", "L"],
            "title: must not be empty",
        ),
        (
            vec!["--title", &long_title, "--price", "1", "--location", "L"],
            "title: must be at most 200 characters",
        ),
        (
            vec!["--title", "T", "--price", "1", "--location", ""],
            "location: must not be empty",
        ),
        (
            vec!["--title", "T", "--price", "1", "--location", &long_location],
            "location: must be at most 100 characters",
        ),
        (
            vec!["--title", "T", "--price", "abc", "--location", "L"],
            "price: must be a decimal number",
        ),
        (
            vec!["--title", "T", "--price", "-5", "--location", "L"],
            "price: must not be negative",
        ),
        (
            vec!["--title", "T", "--price", "1.005", "--location", "L"],
            "price: must have at most 2 decimal places",
        ),
        (
            vec!["--title", "T", "--price", "123456789", "--location", "L"],
            "price: must be less than 100000000",
        ),
    ];
    for (args, expected) in cases {
        let mut full = vec!["create-property"];
        full.extend(args);
        let output = env.run(&full);
        let message = stderr(&output);
        assert!(!output.status.success(), "{full:?} must fail");
        assert!(
            message.contains(expected),
            "{full:?}: `{message}` lacks `{expected}`"
        );
        assert_eq!(message.trim().lines().count(), 1, "one line: {message}");
        assert!(stdout(&output).is_empty());
    }
    let missing = env.run(&["create-property", "--price", "1", "--location", "L"]);
    assert_eq!(missing.status.code(), Some(2), "a usage error");
    assert!(
        stderr(&missing).contains("required arguments were not provided")
            && stderr(&missing).contains("--title <TITLE>"),
        "{}",
        stderr(&missing)
    );
    let app = env.app().await;
    let (rows, _) = listings::service::properties::list_properties(&app, &Default::default())
        .await
        .expect("list");
    assert!(rows.page.data.is_empty(), "nothing was inserted: {rows:?}");
}

#[test]
fn migrate_is_idempotent() {
    let env = TestEnv::embedded();
    let first = env.run(&["migrate"]);
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(
        stdout(&first).contains("Applied migration 2026-11-26-000000_create_properties"),
        "{}",
        stdout(&first)
    );
    let second = env.run(&["migrate"]);
    assert!(second.status.success());
    assert!(
        stdout(&second).starts_with("No pending migrations"),
        "{}",
        stdout(&second)
    );
    let rekeyed = env.run(&["migrate", "--rekey"]);
    assert!(rekeyed.status.success(), "{}", stderr(&rekeyed));
    assert!(
        stdout(&rekeyed).contains("Recomputed the text keys of 0 listing(s)"),
        "{}",
        stdout(&rekeyed)
    );
}

#[test]
fn unreachable_database_is_one_line_naming_the_host() {
    let mut env = TestEnv::embedded();
    env.database_url = "postgres://app:s3cret@127.0.0.1:1/listings".into();
    for args in [
        vec![
            "create-property",
            "--title",
            "T",
            "--price",
            "1",
            "--location",
            "L",
        ],
        vec!["migrate"],
        vec!["serve", "--bind", "127.0.0.1:0"],
    ] {
        let output = env.run(&args);
        let message = stderr(&output);
        assert!(!output.status.success(), "{args:?}");
        assert!(message.contains("127.0.0.1:1"), "{args:?}: {message}");
        assert!(
            !message.contains("s3cret"),
            "{args:?} leaks the password: {message}"
        );
        assert!(
            !message.contains("panicked") && !message.contains("backtrace"),
            "{message}"
        );
        assert_eq!(message.trim().lines().count(), 1, "{args:?}: {message}");
        assert_eq!(
            message.matches("Connection refused").count(),
            1,
            "the cause, once: {message}"
        );
    }
}

#[test]
fn invalid_settings_name_the_setting() {
    let env = TestEnv::embedded();
    for (args, expected) in [
        (vec!["serve", "--view-ttl", "0"], "--view-ttl"),
        (vec!["serve", "--bind", "nowhere"], "--bind"),
        (
            vec!["migrate", "--database-url", "mysql://h/db"],
            "unsupported scheme",
        ),
        (
            vec!["cache-metrics", "--redis-url", "http://h"],
            "--redis-url",
        ),
    ] {
        let output = env.run(&args);
        assert!(!output.status.success(), "{args:?}");
        assert!(
            stderr(&output).contains(expected),
            "{args:?}: {}",
            stderr(&output)
        );
    }
}

/// A database on this machine (both modes' here) gets one read connection per core, at
/// least 2, unless the operator says otherwise.
async fn the_start_up_line_tells_how_many_read_connections(env: TestEnv) {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
    let server = env.serve(&[]);
    let log = server.log();
    assert!(
        log.contains(&format!("), {cores} read connections;")),
        "{log}"
    );
    drop(server);
    let sized = env.serve(&["--db-pool-size", "7"]);
    let log = sized.log();
    assert!(log.contains("), 7 read connections;"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_starts_and_serves_without_redis() {
    let mut env = TestEnv::embedded();
    env.redis_url = Some("redis://127.0.0.1:1/".into());
    let server = env.serve(&[]);
    let response = server.get("/properties/").await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.json(),
        serde_json::json!({ "count": 0, "next": null, "previous": null, "data": [] })
    );
    server.wait_for_log("serving from the database").await;
}

#[test]
fn cache_metrics_reports_an_unreachable_cache_or_server() {
    let mut env = TestEnv::embedded();
    env.redis_url = Some("redis://:pw@127.0.0.1:1/".into());
    let output = env.run(&["cache-metrics"]);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(
        message.contains("127.0.0.1:1") && !message.contains(":pw@"),
        "{message}"
    );
    assert_eq!(message.trim().lines().count(), 1, "{message}");

    let embedded = TestEnv::embedded();
    let output = embedded.run(&["cache-metrics", "--bind", "127.0.0.1:1"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("is `listings serve` running?"),
        "{}",
        stderr(&output)
    );
}
