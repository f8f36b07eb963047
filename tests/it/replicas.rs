//! Read replicas against real streaming replicas of a PostgreSQL of the test's own
//! (`pg_basebackup -R`): a miss is read from a replica only once it has replayed every
//! acknowledged write (from any server), and a replica that is paused, lagging, frozen,
//! down or promoted costs no request and serves no stale read.

use std::time::Duration;

use serde_json::json;

use crate::support::TestEnv;
use crate::support::binary::{Server, stderr};
use crate::support::pg_server::OwnPostgres;
use crate::support::proxy::StallingProxy;

/// A primary, one streaming replica (with `replica_settings`), migrations applied,
/// and an environment whose database is that primary and whose cache is the shared
/// Redis under a prefix of its own.
async fn primary_with_replica(replica_settings: &str) -> (OwnPostgres, OwnPostgres, TestEnv) {
    let primary = OwnPostgres::start_plain();
    let mut env = TestEnv::postgres_redis().await;
    env.database_url = primary.url("127.0.0.1", "postgres", "sslmode=disable");
    let migrated = env.run(&["migrate"]);
    assert!(migrated.status.success(), "{}", stderr(&migrated));
    let replica = OwnPostgres::start_replica(&primary, replica_settings);
    (primary, replica, env)
}

fn replica_url(replica: &OwnPostgres) -> String {
    replica.url("127.0.0.1", "postgres", "sslmode=disable")
}

async fn metrics_text(server: &Server) -> String {
    String::from_utf8_lossy(&server.get("/metrics").await.body).into_owned()
}

async fn sample(server: &Server, name: &str) -> u64 {
    let text = metrics_text(server).await;
    listings::metrics::parse_prometheus_sample(&text, name).unwrap_or(0)
}

async fn replica_reads(server: &Server, replica: &OwnPostgres) -> u64 {
    sample(
        server,
        &format!(
            "listings_db_reads_total{{server=\"127.0.0.1:{}\"}}",
            replica.port
        ),
    )
    .await
}

async fn fallbacks(server: &Server, reason: &str) -> u64 {
    sample(
        server,
        &format!("listings_db_replica_fallbacks_total{{reason=\"{reason}\"}}"),
    )
    .await
}

/// Waits (bounded: 15 s) until the server's checks say the replica serves (or not).
async fn wait_until_serving(server: &Server, replica: &OwnPostgres, serving: bool) {
    let name = format!(
        "listings_db_replica_serving{{replica=\"127.0.0.1:{}\"}}",
        replica.port
    );
    for _ in 0..300 {
        let text = metrics_text(server).await;
        if listings::metrics::parse_prometheus_sample(&text, &name) == Some(u64::from(serving)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "the replica never became {}:\n{}",
        if serving { "serving" } else { "skipped" },
        metrics_text(server).await
    );
}

/// Reads searches no one asked for before (each a miss) until one is served by the
/// replica (bounded); the number of reads it took.
async fn read_until_a_replica_serves(server: &Server, replica: &OwnPostgres, tag: &str) -> usize {
    let before = replica_reads(server, replica).await;
    for attempt in 0..100 {
        let page = server
            .get(&format!("/properties/?location={tag}{attempt}"))
            .await;
        assert_eq!(page.status, 200);
        if replica_reads(server, replica).await > before {
            return attempt + 1;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    panic!(
        "no miss was read from the replica:\n{}",
        metrics_text(server).await
    );
}

fn patch(server: &Server, id: i64, body: serde_json::Value) {
    let (status, answer) = server.send("PATCH", &format!("/properties/{id}/"), Some(&body));
    assert_eq!(status, 200, "{answer}");
}

fn create(server: &Server, title: &str, price: &str, location: &str) -> i64 {
    let (status, created) = server.post_json(
        "/properties/",
        &json!({"title": title, "description": "", "price": price, "location": location}),
    );
    assert_eq!(status, 201, "{created}");
    created["id"].as_i64().expect("id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(listings_test_services), ignore = "needs PostgreSQL and Redis")]
async fn a_miss_reads_a_replica_only_once_it_has_replayed_every_acknowledged_write() {
    let (_primary, replica, env) = primary_with_replica("").await;
    let url = replica_url(&replica);
    // Two servers: one keeps a paused replica serving, the other gives up on it after a
    // second; each reads what the other wrote.
    let patient = env.serve_writable(&[
        "--database-replica-url",
        &url,
        "--replica-max-lag",
        "60",
        "--admin-bind",
        "127.0.0.1:0",
    ]);
    let strict = env.serve_writable(&["--database-replica-url", &url, "--replica-max-lag", "1"]);
    assert!(
        patient
            .log()
            .contains(&format!("replicas: 127.0.0.1:{} (serving)", replica.port)),
        "the start-up line names the replica and its standing: {}",
        patient.log()
    );
    let id = create(&patient, "Harbour view", "250000", "Lamu");
    read_until_a_replica_serves(&patient, &replica, "warm").await;
    read_until_a_replica_serves(&strict, &replica, "warm").await;
    assert_eq!(
        patient.get(&format!("/properties/{id}/")).await.json()["title"],
        "Harbour view"
    );
    assert_eq!(
        strict.get("/properties/?location=Lamu").await.titles(),
        ["Harbour view"]
    );

    // The replica stops replaying: every acknowledged write from now on is missing there.
    replica.value("SELECT pg_wal_replay_pause()");
    // A writer that reads no WAL positions (a command run without the replica
    // settings) makes the watermark unknown: reads go to the primary until a server's
    // check has read the primary's position since.
    let created = env.create_via_cli("Dhow moorings", "120000", "Lamu");
    assert!(created.status.success(), "{}", stderr(&created));
    assert_eq!(
        patient
            .get("/properties/?location=Lamu&ordering=price")
            .await
            .titles(),
        ["Dhow moorings", "Harbour view"]
    );
    // Once a check has made the watermark known again (past the paused replica), a
    // new miss falls back because the replica is behind it.
    let behind_before = fallbacks(&patient, "behind_watermark").await;
    for attempt in 0..100 {
        let page = patient
            .get(&format!("/properties/?location=healed{attempt}"))
            .await;
        assert_eq!(page.status, 200);
        if fallbacks(&patient, "behind_watermark").await > behind_before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let behind_before = fallbacks(&patient, "behind_watermark").await;
    patch(&strict, id, json!({"title": "Harbour view, renovated"}));
    assert_eq!(
        patient.get(&format!("/properties/{id}/")).await.json()["title"],
        "Harbour view, renovated",
        "a server that still trusts the replica reads the write from the primary"
    );
    assert_eq!(
        patient.get("/properties/?location=Lamu").await.titles(),
        ["Dhow moorings", "Harbour view, renovated"]
    );
    assert!(
        fallbacks(&patient, "behind_watermark").await > behind_before,
        "the reads went to the primary because the replica was behind the watermark"
    );
    // The other server sees the replica lag past its second and stops using it at all.
    wait_until_serving(&strict, &replica, false).await;
    let lagging_before = fallbacks(&strict, "lagging").await;
    assert_eq!(
        strict
            .get("/properties/?location=Lamu&ordering=-price")
            .await
            .titles(),
        ["Harbour view, renovated", "Dhow moorings"]
    );
    assert!(fallbacks(&strict, "lagging").await > lagging_before);
    let lag = sample(
        &strict,
        &format!(
            "listings_db_replica_lag_bytes{{replica=\"127.0.0.1:{}\"}}",
            replica.port
        ),
    )
    .await;
    assert!(lag > 0, "the lag in bytes is shown");

    let admin =
        crate::dashboard::admin_address(&patient.wait_for_log("dashboard on http://").await);
    let dashboard = crate::dashboard::dashboard_data(admin).await;
    let shown = &dashboard["server"]["replicas"][0];
    assert_eq!(shown["name"], format!("127.0.0.1:{}", replica.port));
    assert_eq!(shown["standing"], "serving", "{dashboard}");
    assert!(shown["reads"].as_u64() > Some(0), "{dashboard}");
    assert!(dashboard["server"]["reads"]["primary"].as_u64() > Some(0));

    // Replaying again, the replica catches up and serves both again.
    replica.value("SELECT pg_wal_replay_resume()");
    wait_until_serving(&strict, &replica, true).await;
    read_until_a_replica_serves(&strict, &replica, "caught-up").await;
    read_until_a_replica_serves(&patient, &replica, "caught-up").await;
    assert_eq!(
        strict.get(&format!("/properties/{id}/")).await.json()["title"],
        "Harbour view, renovated"
    );

    // Operators see it from another process too.
    let report = env.run(&["cache-metrics", "--database-replica-url", &url]);
    assert!(report.status.success(), "{}", stderr(&report));
    let text = crate::support::binary::stdout(&report);
    let line = text
        .lines()
        .find(|line| line.starts_with(&format!("replica 127.0.0.1:{}: serving", replica.port)))
        .unwrap_or_else(|| panic!("no line for the replica:\n{text}"));
    let reads: u64 = line
        .rsplit(", ")
        .next()
        .and_then(|last| last.strip_suffix(" reads"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the line counts every server's reads on it: {line}"));
    assert!(reads > 0, "{line}");
    assert!(text.contains("reads: primary "), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(listings_test_services), ignore = "needs PostgreSQL and Redis")]
async fn a_frozen_down_or_promoted_replica_fails_no_request() {
    let (_primary, replica, env) = primary_with_replica("").await;
    let proxy = StallingProxy::start(
        format!("127.0.0.1:{}", replica.port)
            .parse()
            .expect("address"),
    )
    .await;
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable",
        proxy.address.port()
    );
    let server = env.serve_writable(&["--database-replica-url", &url, "--replica-max-lag", "60"]);
    let through_proxy = |server: &Server| {
        let name = format!(
            "listings_db_replica_serving{{replica=\"127.0.0.1:{}\"}}",
            proxy.address.port()
        );
        let server_metrics = server.address;
        async move {
            let text = String::from_utf8_lossy(
                &listings::http_client::get(server_metrics, "/metrics")
                    .await
                    .expect("metrics")
                    .into_body(),
            )
            .into_owned();
            listings::metrics::parse_prometheus_sample(&text, &name)
        }
    };
    let id = create(&server, "Quiet plot", "90000", "Malindi");
    for _ in 0..300 {
        if through_proxy(&server).await == Some(1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(through_proxy(&server).await, Some(1), "the replica serves");

    // Frozen: connections open, nothing answers.
    proxy.stall();
    for attempt in 0..5 {
        let page = server
            .get(&format!("/properties/?location=frozen{attempt}"))
            .await;
        assert_eq!(page.status, 200, "a frozen replica fails no request");
    }
    assert_eq!(
        server.get(&format!("/properties/{id}/")).await.json()["title"],
        "Quiet plot"
    );
    assert_eq!(
        through_proxy(&server).await,
        Some(0),
        "a frozen replica is skipped"
    );
    proxy.resume();
    for _ in 0..300 {
        if through_proxy(&server).await == Some(1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        through_proxy(&server).await,
        Some(1),
        "back once it answers"
    );
    drop(server);

    // Down, then back; then promoted, which makes it a primary of its own.
    let server = env.serve_writable(&["--database-replica-url", &replica_url(&replica)]);
    wait_until_serving(&server, &replica, true).await;
    replica.stop();
    for attempt in 0..5 {
        let page = server
            .get(&format!("/properties/?location=down{attempt}"))
            .await;
        assert_eq!(page.status, 200, "a replica that is down fails no request");
    }
    wait_until_serving(&server, &replica, false).await;
    let down_before = fallbacks(&server, "down").await;
    assert_eq!(
        server.get("/properties/?location=down-again").await.status,
        200
    );
    assert!(fallbacks(&server, "down").await > down_before);
    replica.start_again();
    wait_until_serving(&server, &replica, true).await;

    replica.value("SELECT pg_promote()");
    wait_until_serving(&server, &replica, false).await;
    patch(&server, id, json!({"price": "95000"}));
    let promoted_before = fallbacks(&server, "not_a_replica").await;
    assert_eq!(
        server.get(&format!("/properties/{id}/")).await.json()["price"],
        "95000.00",
        "a promoted replica no longer receives the primary's writes: never read"
    );
    assert!(fallbacks(&server, "not_a_replica").await > promoted_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(listings_test_services), ignore = "needs PostgreSQL and Redis")]
async fn two_servers_over_a_delayed_replica_never_serve_a_read_older_than_an_acknowledged_write() {
    // Every commit reaches the replica 300 ms late: a read after an acknowledged write
    // on a replica would see the old row, its old place in the order and the old count.
    let (_primary, replica, env) = primary_with_replica("recovery_min_apply_delay = '300ms'").await;
    let url = replica_url(&replica);
    let servers = [
        env.serve_writable(&["--database-replica-url", &url, "--replica-max-lag", "60"]),
        env.serve_writable(&["--database-replica-url", &url, "--replica-max-lag", "60"]),
    ];
    let ids: Vec<i64> = (0..4)
        .map(|i| {
            create(
                &servers[0],
                &format!("Listing {i}"),
                &format!("{}", 100_000 + i),
                "Kilifi",
            )
        })
        .collect();
    let replica_reads_before = replica_reads(&servers[1], &replica).await;
    for round in 0..24_i64 {
        let writer = &servers[(round % 2) as usize];
        let reader = &servers[((round + 1) % 2) as usize];
        let id = ids[(round % 4) as usize];
        let price = 200_000 + round * 1_000;
        if round % 6 == 5 {
            let moved = create(
                writer,
                &format!("New {round}"),
                &price.to_string(),
                "Kilifi",
            );
            let page = reader
                .get("/properties/?location=Kilifi&ordering=-price")
                .await
                .json();
            assert_eq!(
                page["data"][0]["id"], moved,
                "round {round}: the new row leads"
            );
            assert_eq!(page["count"], 5 + round / 6, "round {round}: the count");
            continue;
        }
        patch(writer, id, json!({"price": price.to_string()}));
        let item = reader.get(&format!("/properties/{id}/")).await.json();
        assert_eq!(
            item["price"],
            format!("{price}.00"),
            "round {round}: the item"
        );
        let page = reader
            .get("/properties/?location=Kilifi&ordering=-price")
            .await
            .json();
        assert_eq!(page["data"][0]["id"], id, "round {round}: the order");
        let ranged = reader
            .get(&format!("/properties/?location=Kilifi&min_price={price}"))
            .await
            .json();
        assert_eq!(ranged["count"], 1, "round {round}: the ranged count");
        // Between writes the replica catches up and serves other misses.
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert_eq!(
            reader
                .get(&format!("/properties/?location=other{round}"))
                .await
                .status,
            200
        );
    }
    assert!(
        replica_reads(&servers[1], &replica).await > replica_reads_before,
        "the replica served misses meanwhile"
    );
}

#[test]
fn replicas_are_refused_where_they_cannot_be_kept_fresh() {
    let env = TestEnv::embedded();
    let replica = "postgres://postgres@127.0.0.1:5432/postgres";
    let embedded = env.run(&["list-properties", "--database-replica-url", replica]);
    assert!(!embedded.status.success());
    assert!(
        stderr(&embedded).contains(
            "--database-replica-url (DATABASE_REPLICA_URLS) needs DATABASE_URL to be PostgreSQL"
        ),
        "{}",
        stderr(&embedded)
    );
    let not_postgres = env.run(&[
        "list-properties",
        "--database-replica-url",
        "replica.sqlite3",
    ]);
    assert!(!not_postgres.status.success());
    assert!(
        stderr(&not_postgres).contains("must be a postgres:// URL"),
        "{}",
        stderr(&not_postgres)
    );
    // Commas separate URLs in the variable and the flag alike: one in a password must
    // be percent-encoded; the pieces are refused without showing them.
    let several = env.run(&[
        "list-properties",
        "--database-replica-url",
        "postgres://u:sec,ret@replica/db",
    ]);
    assert!(!several.status.success());
    assert!(!stderr(&several).contains("ret@"), "{}", stderr(&several));
}
