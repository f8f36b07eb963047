//! The original system's walkthrough, driving the real binary in both modes: a view
//! miss that reads the database, a hit that does not, a write from a second process,
//! a miss that shows it, and the counts in `cache-metrics --json`.

use crate::both_modes;
use crate::support::TestEnv;
use crate::support::binary::{stderr, stdout};

both_modes!(walkthrough);

async fn walkthrough(env: TestEnv) {
    if env.is_postgres() {
        let migrate = env.run(&["migrate"]);
        assert!(migrate.status.success(), "{}", stderr(&migrate));
    }
    let server = env.serve(&[]);
    let log = server.log();
    assert!(
        log.contains("database: "),
        "start-up line names the database: {log}"
    );
    assert!(
        log.contains(if env.is_redis() {
            "cache: Redis at"
        } else {
            "cache: in-process"
        }),
        "{log}"
    );

    let first = server.get("/properties/").await;
    assert_eq!((first.status, first.x_cache.as_str()), (200, "MISS"));
    assert_eq!(
        first.json(),
        serde_json::json!({ "count": 0, "next": null, "previous": null, "data": [] })
    );
    server
        .wait_for_log("all_properties cache miss: loaded 0 properties from database")
        .await;
    let queries_after_miss = server.db_queries().await;
    assert!(queries_after_miss >= 1, "the miss read the database");

    let second = server.get("/properties/").await;
    assert_eq!((second.status, second.x_cache.as_str()), (200, "HIT"));
    assert_eq!(second.body, first.body);
    assert_eq!(
        server.db_queries().await,
        queries_after_miss,
        "a view hit does no database query"
    );

    let created = env.run(&[
        "create-property",
        "--title",
        "Beach villa",
        "--description",
        "Four bedrooms, sea view",
        "--price",
        "500000.00",
        "--location",
        "Malindi",
    ]);
    assert!(created.status.success(), "{}", stderr(&created));
    let property: serde_json::Value =
        serde_json::from_str(&stdout(&created)).expect("one JSON object");
    assert_eq!(property["title"], "Beach villa");
    assert_eq!(property["price"], "500000.00");
    assert!(stderr(&created).contains(&format!(
        "cache invalidated: property {} created",
        property["id"]
    )));

    let third = server.get("/properties/").await;
    assert_eq!((third.status, third.x_cache.as_str()), (200, "MISS"));
    assert_eq!(third.json()["data"], serde_json::json!([property]));
    assert!(
        server.db_queries().await > queries_after_miss,
        "the miss after the write read the database"
    );
    server
        .wait_for_log("all_properties cache miss: loaded 1 properties from database")
        .await;

    // Servers add their counts to the shared ones once a second: look until they do.
    let read_metrics = || {
        let output = env.run(&[
            "cache-metrics",
            "--json",
            "--bind",
            &server.address.to_string(),
        ]);
        assert!(output.status.success(), "{}", stderr(&output));
        serde_json::from_str::<serde_json::Value>(&stdout(&output)).expect("JSON")
    };
    let mut metrics = read_metrics();
    for _ in 0..30 {
        if metrics["view"]["misses"] == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        metrics = read_metrics();
    }
    assert_eq!(metrics["view"]["hits"], 1, "{metrics}");
    assert_eq!(metrics["view"]["misses"], 2, "{metrics}");
    assert_eq!(metrics["all_properties"]["misses"], 2, "{metrics}");
    assert_eq!(metrics["all_properties"]["hits"], 0, "{metrics}");
    // Three listings were answered (and /metrics); the misses read the database.
    assert!(metrics["requests"].as_u64() >= Some(3), "{metrics}");
    assert!(metrics["db_queries"].as_u64() >= Some(2), "{metrics}");
    if env.is_redis() {
        assert_eq!(metrics["cache"], "redis");
        let hits = metrics["keyspace_hits"].as_u64().expect("keyspace_hits");
        let misses = metrics["keyspace_misses"]
            .as_u64()
            .expect("keyspace_misses");
        let ratio = metrics["hit_ratio"].as_f64().expect("hit_ratio");
        assert!(hits >= 1 && misses >= 1, "{metrics}");
        assert!((0.0..=1.0).contains(&ratio), "{metrics}");
    } else {
        assert_eq!(metrics["cache"], "in-process");
        assert!(metrics["hit_ratio"].is_null());
    }
    let human = env.run(&["cache-metrics", "--bind", &server.address.to_string()]);
    assert!(stdout(&human).contains("view"), "{}", stdout(&human));

    let status = server.terminate();
    assert!(status.success(), "serve exits 0 on SIGTERM: {status}");
}
