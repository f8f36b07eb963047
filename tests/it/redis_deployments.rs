//! Past one Redis: a Sentinel set failing over under load, a write whose invalidation
//! the new master never received, a Cluster losing a master without a replica, the
//! cluster key layout on real nodes, and a TLS-only Redis with a private CA. Every
//! Redis here is the test's own (see `support::redis_server`); servers are real
//! `listings serve` processes, loaded over real HTTP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::support::TestEnv;
use crate::support::binary::{Server, stderr, stdout};
use crate::support::redis_server::{OwnRedis, RedisCluster, SENTINEL_SERVICE, SentinelSet};

/// GETs from a few workers, each pausing between requests so two cores keep up, until
/// stopped or `cap` has passed; counts the requests that did not get a 200.
struct Load {
    stop: Arc<AtomicBool>,
    workers: JoinSet<(u64, Vec<String>)>,
}

impl Load {
    fn start(servers: &[&Server], paths: &[&str], cap: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = JoinSet::new();
        let targets: Vec<(SocketAddr, String)> = servers
            .iter()
            .flat_map(|server| {
                paths
                    .iter()
                    .map(|path| (server.address, (*path).to_owned()))
            })
            .collect();
        for worker in 0..4 {
            let stop = stop.clone();
            let targets = targets.clone();
            workers.spawn(async move {
                let started = Instant::now();
                let (mut sent, mut failures) = (0u64, Vec::new());
                while !stop.load(Ordering::Acquire) && started.elapsed() < cap {
                    let (address, path) = &targets[(worker + sent as usize) % targets.len()];
                    match listings::http_client::get(*address, path).await {
                        Ok(response) if response.status() == 200 => {}
                        Ok(response) => failures.push(format!("{path}: {}", response.status())),
                        Err(e) => failures.push(format!("{path}: {e:#}")),
                    }
                    sent += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                (sent, failures)
            });
        }
        Load { stop, workers }
    }

    /// Stops the load; returns how many requests were sent, and every failure.
    async fn finish(mut self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Release);
        let (mut sent, mut failures) = (0, Vec::new());
        while let Some(done) = self.workers.join_next().await {
            let (worker_sent, worker_failures) = done.expect("load worker");
            sent += worker_sent;
            failures.extend(worker_failures);
        }
        (sent, failures)
    }
}

async fn until_hit(server: &Server, path: &str, bound: Duration) -> Duration {
    let started = Instant::now();
    while started.elapsed() < bound {
        if server.get(path).await.x_cache == "HIT" {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "{path} was not served from the cache within {bound:?}:\n{}",
        server.log()
    );
}

fn create(env: &TestEnv, title: &str) {
    let created = env.create_via_cli(title, "100", "Lamu");
    assert!(created.status.success(), "{}", stderr(&created));
}

/// How the master goes away.
#[derive(Clone, Copy)]
enum Failover {
    /// `SENTINEL FAILOVER`: the old master lives on as a replica.
    Command,
    /// SIGKILL: the sentinel notices (1 s) and promotes the replica.
    KillMaster,
}

/// Two servers under load through a Sentinel failover: no request fails, a write
/// made just before and one made just after are on the next request to each server,
/// and both serve from the cache again within 5 s of the new master.
async fn failover_under_load(how: Failover) {
    let mut env = TestEnv::postgres_redis().await;
    let mut set = tokio::task::spawn_blocking(SentinelSet::start)
        .await
        .expect("Sentinel set");
    env.redis_url = Some(set.url());
    let servers = [env.serve(&[]), env.serve(&[])];
    create(&env, "First");
    for server in &servers {
        until_hit(server, "/properties/", Duration::from_secs(5)).await;
    }
    let load = Load::start(
        &[&servers[0], &servers[1]],
        &["/properties/", "/properties/?location=lamu"],
        Duration::from_secs(60),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;

    create(&env, "Just before");
    let old_master = set.master_port();
    match how {
        Failover::Command => {
            let answer = set.sentinels[0].command(&["SENTINEL", "FAILOVER", SENTINEL_SERVICE]);
            assert_eq!(answer.as_deref(), Some("OK"));
        }
        Failover::KillMaster => set.master().kill(),
    }
    let set = Arc::new(set);
    let new_master_at = tokio::task::spawn_blocking({
        let set = set.clone();
        move || set.wait_for_new_master(old_master)
    })
    .await
    .expect("failover");
    create(&env, "Just after");
    for server in &servers {
        let titles = server.get("/properties/").await.titles();
        assert_eq!(
            titles[..2],
            ["Just after", "Just before"],
            "the next request to {} after both writes:\n{}",
            server.address,
            server.log()
        );
    }
    for server in &servers {
        until_hit(server, "/properties/", Duration::from_secs(5)).await;
    }
    let resumed_within = new_master_at.elapsed();
    let (sent, failures) = load.finish().await;
    eprintln!(
        "{sent} requests under load; hits resumed within {resumed_within:?} of the new master"
    );
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert!(sent > 100, "the load ran: {sent} requests");
    assert!(
        resumed_within < Duration::from_secs(5),
        "hits resumed {resumed_within:?} after the new master"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(not(listings_test_services), ignore = "needs PostgreSQL and Redis")]
async fn a_sentinel_failover_command_under_load_fails_no_request() {
    failover_under_load(Failover::Command).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(not(listings_test_services), ignore = "needs PostgreSQL and Redis")]
async fn a_killed_sentinel_master_under_load_fails_no_request() {
    failover_under_load(Failover::KillMaster).await;
}

/// Replication is asynchronous: here the replica is cut off (stopped, its link killed)
/// when a write's invalidation reaches the master, and the master dies before it could
/// send it. The promoted replica still holds the clock from before the write, and
/// entries cached under it; the first script on the new master must retire them, so
/// that even a fresh process (the CLI, which hears of nothing) reads the write.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(not(listings_test_services), ignore = "needs PostgreSQL and Redis")]
async fn an_invalidation_the_new_master_never_received_loses_no_write() {
    let mut env = TestEnv::postgres_redis().await;
    let mut set = tokio::task::spawn_blocking(SentinelSet::start)
        .await
        .expect("Sentinel set");
    env.redis_url = Some(set.url());
    create(&env, "Old");
    let listed = |env: &TestEnv| {
        let output = env.run(&["list-properties", "--json"]);
        assert!(output.status.success(), "{}", stderr(&output));
        let page: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("JSON");
        page["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|p| p["title"].as_str().expect("title").to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(listed(&env), ["Old"]);
    let master_port = set.master_port();
    let replica = set
        .servers
        .iter()
        .position(|server| server.port() != master_port)
        .expect("a replica");
    let master = 1 - replica;
    // The list is cached, and replicated.
    let prefix = env.cache_prefix.clone();
    let clock = format!("{{{prefix}}}properties:clock");
    let sequence_of = |server: &crate::support::redis_server::OwnRedis| -> u64 {
        server
            .command(&["HGET", &clock, "seq"])
            .and_then(|g| g.parse().ok())
            .expect("a sequence")
    };
    let before = sequence_of(&set.servers[replica]);
    let stale_entry = format!("{prefix}properties:{{all_properties:all_properties}}");
    assert_eq!(
        set.servers[replica]
            .command(&["EXISTS", &stale_entry])
            .as_deref(),
        Some("1"),
        "the replica holds the list from before the write"
    );

    set.servers[replica].signal("-STOP");
    assert!(
        set.servers[master]
            .command(&["CLIENT", "KILL", "TYPE", "replica"])
            .is_some(),
        "the replica's link is cut"
    );
    create(&env, "New"); // its invalidation reaches the master only
    set.servers[master].kill();
    set.servers[replica].signal("-CONT");
    let set = tokio::task::spawn_blocking(move || {
        set.wait_for_new_master(master_port);
        set
    })
    .await
    .expect("failover");

    assert_eq!(
        listed(&env),
        ["New", "Old"],
        "a fresh process after the failover reads the acknowledged write"
    );
    // Not by luck: the old list was still there, with a stamp from before the write,
    // which the new master retired on its first script (its sequence moved past every
    // number the old one could have used, and everything was retired at that number).
    let promoted = &set.servers[replica];
    let after = sequence_of(promoted);
    assert!(
        after >= before + (1 << 32),
        "the new master moved the sequence past every number the old could have used: {before} -> {after}"
    );
    let everything_retired_at: u64 = promoted
        .command(&["HGET", &clock, "0"])
        .and_then(|at| at.parse().ok())
        .expect("everything retired");
    assert!(everything_retired_at >= before + (1 << 32));
    let run_id = promoted
        .command(&["INFO", "server"])
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("run_id:").map(str::to_owned))
        })
        .expect("run id");
    assert_eq!(
        promoted.command(&["GET", &format!("{{{prefix}}}properties:master")]),
        Some(run_id.trim().to_owned())
    );
    let server = env.serve(&[]);
    assert_eq!(server.get("/properties/").await.titles(), ["New", "Old"]);
}

/// A cluster master killed, no replica to take over: requests for its slots are served
/// from the database, the other masters keep serving theirs, and no request fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(not(listings_test_services), ignore = "needs PostgreSQL and Redis")]
async fn a_cluster_master_killed_without_a_replica_fails_no_request() {
    let mut env = TestEnv::postgres_redis().await;
    let mut cluster = tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .expect("Redis Cluster");
    env.redis_url = Some(cluster.url());
    for title in ["A", "B", "C"] {
        create(&env, title);
    }
    let server = env.serve(&[]);
    let paths: Vec<String> = (0..24)
        .map(|i| format!("/properties/?min_price={i}"))
        .collect();
    for path in &paths {
        until_hit(&server, path, Duration::from_secs(5)).await;
    }
    let counts = cluster.key_counts();
    assert!(
        counts.iter().all(|n| *n > 0),
        "entries on every master: {counts:?}"
    );

    // A master that does not hold the clock: theirs keep working.
    let control = format!("{{{}}}properties:clock", env.cache_prefix);
    let control_port = cluster.node_of(&control).port();
    let victim = cluster
        .nodes
        .iter_mut()
        .find(|node| node.port() != control_port)
        .expect("another master");
    let paths_ref: Vec<&str> = paths.iter().map(String::as_str).collect();
    let load = Load::start(&[&server], &paths_ref, Duration::from_secs(30));
    tokio::time::sleep(Duration::from_millis(200)).await;
    victim.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    create(&env, "D");
    for path in &paths {
        let response = server.get(path).await;
        assert_eq!(response.status, 200);
        assert_eq!(response.titles().len(), 4, "{path} after a write");
    }
    // A server with nothing in memory yet: what the first one stored on the live
    // masters is a hit, the dead master's slots come from the database.
    let fresh = env.serve(&[]);
    let mut hits = 0;
    for path in &paths {
        let response = fresh.get(path).await;
        assert_eq!(response.status, 200);
        assert_eq!(response.titles().len(), 4, "{path} on a fresh server");
        hits += usize::from(response.x_cache == "HIT");
    }
    let (sent, failures) = load.finish().await;
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert!(sent > 100, "the load ran: {sent} requests");
    assert!(
        hits > 0 && hits < paths.len(),
        "the live masters' slots still hit, the dead one's do not: {hits} of {}",
        paths.len()
    );
}

/// The control keys' slot moved to another master while a server runs: clients follow
/// ASK and MOVED, the new owner (another run id) retires everything before it answers,
/// a write after the move is on the next request, and hits resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(not(listings_test_services), ignore = "needs PostgreSQL and Redis")]
async fn the_control_slot_moved_to_another_master_serves_nothing_old() {
    let mut env = TestEnv::postgres_redis().await;
    let mut cluster = tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .expect("Redis Cluster");
    env.redis_url = Some(cluster.url());
    create(&env, "Before");
    let server = env.serve(&[]);
    until_hit(&server, "/properties/", Duration::from_secs(5)).await;
    let load = Load::start(&[&server], &["/properties/"], Duration::from_secs(30));

    let control = format!("{{{}}}properties:clock", env.cache_prefix);
    let from = cluster.node_of(&control).port();
    let to = cluster
        .nodes
        .iter()
        .map(|node| node.port())
        .find(|port| *port != from)
        .expect("another master");
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.move_slot_of(&control, to);
        cluster
    })
    .await
    .expect("move the slot");
    let moved = format!("{{{}}}properties:clock", env.cache_prefix);
    let nodes_holding: Vec<u16> = cluster
        .nodes
        .iter()
        .filter(|node| node.command(&["EXISTS", &moved]).as_deref() == Some("1"))
        .map(|node| node.port())
        .collect();
    assert_eq!(nodes_holding, [to], "the clock moved with its slot");
    let new_owner = cluster
        .nodes
        .iter()
        .find(|node| node.port() == to)
        .expect("the new owner");
    let sequence = || -> u64 {
        new_owner
            .command(&["HGET", &moved, "seq"])
            .and_then(|g| g.parse().ok())
            .expect("a sequence")
    };
    let moved_with = sequence();
    // A fresh process, before any write: its first script on the new owner retires
    // what the slot brought along.
    let listed = env.run(&["list-properties"]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    assert!(
        sequence() >= moved_with + (1 << 32),
        "the new owner retired everything it inherited"
    );

    create(&env, "After");
    assert_eq!(
        server.get("/properties/").await.titles(),
        ["After", "Before"],
        "{}",
        server.log()
    );
    until_hit(&server, "/properties/", Duration::from_secs(5)).await;
    let (sent, failures) = load.finish().await;
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert!(sent > 50, "the load ran: {sent} requests");
}

/// One of three sentinels frozen: the other two still make a majority, so the master is
/// followed, servers keep serving from their near-cache, and writes are seen at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(not(listings_test_services), ignore = "needs PostgreSQL and Redis")]
async fn a_silent_sentinel_costs_nothing() {
    let mut env = TestEnv::postgres_redis().await;
    let set = tokio::task::spawn_blocking(SentinelSet::start)
        .await
        .expect("Sentinel set");
    env.redis_url = Some(set.url());
    set.sentinels[0].signal("-STOP");
    create(&env, "First");
    let server = env.serve(&[]);
    until_hit(&server, "/properties/", Duration::from_secs(5)).await;
    create(&env, "Second");
    assert_eq!(
        server.get("/properties/").await.titles(),
        ["Second", "First"]
    );
    until_hit(&server, "/properties/", Duration::from_secs(5)).await;
    set.sentinels[0].signal("-CONT");
}

/// On real cluster nodes: every script's keys share a slot (the cluster would refuse
/// them otherwise), the control keys sit on one master, entries on all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(not(listings_test_services), ignore = "needs PostgreSQL and Redis")]
async fn cluster_keys_control_in_one_slot_entries_everywhere() {
    let mut env = TestEnv::postgres_redis().await;
    let mut cluster = tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .expect("Redis Cluster");
    env.redis_url = Some(cluster.url());
    create(&env, "Villa");
    let server = env.serve(&[]);
    for id in 0..30 {
        let _ = server.get(&format!("/properties/{id}")).await;
        let _ = server
            .get(&format!("/properties/?page_size={}", id + 1))
            .await;
    }
    tokio::time::sleep(Duration::from_millis(1200)).await; // counts flushed
    let prefix = &env.cache_prefix;
    let control_node = cluster.node_of(&format!("{{{prefix}}}near")).port();
    for key in [
        format!("{{{prefix}}}properties:clock"),
        format!("{{{prefix}}}properties:master"),
        format!("{{{prefix}}}stats:view:misses"),
    ] {
        let node = cluster.node_of(&key);
        assert_eq!(node.port(), control_node, "{key}");
        assert_eq!(
            node.command(&["EXISTS", &key]).as_deref(),
            Some("1"),
            "{key} exists"
        );
    }
    let counts = cluster.key_counts();
    assert!(
        counts.iter().all(|n| *n > 3),
        "entries spread over every master: {counts:?}"
    );
    let metrics = env.run(&["cache-metrics"]);
    assert!(metrics.status.success(), "{}", stderr(&metrics));
    assert!(stdout(&metrics).contains("view"), "{}", stdout(&metrics));
}

/// A TLS-only Redis whose certificate a private CA signed: trusted through
/// `SSL_CERT_FILE`, the cache works; without it the TLS handshake fails and requests
/// are served from the database; a file that cannot be read stops the start.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[cfg_attr(not(listings_test_services), ignore = "needs PostgreSQL and Redis")]
async fn tls_redis_with_a_private_ca() {
    let mut env = TestEnv::postgres_redis().await;
    let redis = tokio::task::spawn_blocking(OwnRedis::start_tls)
        .await
        .expect("TLS Redis");
    env.redis_url = Some(redis.url());
    create(&env, "Villa");

    let mut trusting = env.command(&["serve", "--bind", "127.0.0.1:0"]);
    trusting.env("SSL_CERT_FILE", redis.ca_file());
    let server = Server::start(trusting);
    until_hit(&server, "/properties/", Duration::from_secs(5)).await;
    drop(server);

    let mut untrusting = env.command(&["serve", "--bind", "127.0.0.1:0"]);
    untrusting.env_remove("SSL_CERT_FILE");
    let server = Server::start(untrusting);
    for _ in 0..3 {
        let response = server.get("/properties/").await;
        assert_eq!(response.status, 200);
        assert_eq!(response.titles(), ["Villa"]);
        assert_ne!(response.x_cache, "HIT");
    }
    server.wait_for_log("certificate").await;
    drop(server);

    let mut unreadable = env.command(&["list-properties"]);
    unreadable.env("SSL_CERT_FILE", env.dir.path().join("missing-ca.pem"));
    let output = unreadable.output().expect("run");
    assert!(!output.status.success());
    let error = stderr(&output);
    assert!(
        error.contains("SSL_CERT_FILE") && error.contains("missing-ca.pem"),
        "{error}"
    );
}

/// A `listings` command that trusts `ca` (as `SSL_CERT_FILE`).
fn trusting(env: &TestEnv, ca: &std::path::Path, args: &[&str]) -> std::process::Command {
    let mut command = env.command(args);
    command.env("SSL_CERT_FILE", ca);
    command
}

fn create_trusting(env: &TestEnv, ca: &std::path::Path, title: &str) {
    let created = trusting(
        env,
        ca,
        &[
            "create-property",
            "--title",
            title,
            "--price",
            "100",
            "--location",
            "Lamu",
        ],
    )
    .output()
    .expect("create-property");
    assert!(created.status.success(), "{}", stderr(&created));
}

/// `rediss+cluster://`: a Cluster speaking TLS only, trusted through `SSL_CERT_FILE`.
/// Entries spread over the masters, and a write by another process is on the next
/// request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(listings_test_services), ignore = "needs PostgreSQL and Redis")]
async fn tls_cluster_with_a_private_ca() {
    let mut env = TestEnv::postgres_redis().await;
    let cluster = tokio::task::spawn_blocking(RedisCluster::start_tls)
        .await
        .expect("TLS Cluster");
    env.redis_url = Some(cluster.url());
    let ca = &cluster.ca_file();
    let server = Server::start(trusting(&env, ca, &["serve", "--bind", "127.0.0.1:0"]));
    create_trusting(&env, ca, "Villa");
    for path in [
        "/properties/",
        "/properties/?location=Lamu",
        "/properties/1/",
    ] {
        until_hit(&server, path, Duration::from_secs(5)).await;
    }
    let counts = cluster.key_counts();
    assert!(
        counts.iter().filter(|&&keys| keys > 0).count() >= 2,
        "entries spread over the masters: {counts:?}"
    );

    create_trusting(&env, ca, "Cottage");
    let after = server.get("/properties/").await;
    assert_eq!(
        after.titles(),
        ["Cottage", "Villa"],
        "the write is on the next request"
    );
    assert!(
        !server.log().contains("certificate"),
        "no TLS failure:\n{}",
        server.log()
    );
}

/// `rediss+sentinel://`: sentinels and data nodes speaking TLS only, trusted through
/// `SSL_CERT_FILE`; a failover is followed, and writes before and after it are on the
/// next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(listings_test_services), ignore = "needs PostgreSQL and Redis")]
async fn tls_sentinel_with_a_private_ca_follows_a_failover() {
    let mut env = TestEnv::postgres_redis().await;
    let set = tokio::task::spawn_blocking(SentinelSet::start_tls)
        .await
        .expect("TLS Sentinel set");
    env.redis_url = Some(set.url());
    let ca = &set.ca_file();
    let server = Server::start(trusting(&env, ca, &["serve", "--bind", "127.0.0.1:0"]));
    create_trusting(&env, ca, "Before");
    until_hit(&server, "/properties/", Duration::from_secs(5)).await;
    assert_eq!(server.get("/properties/").await.titles(), ["Before"]);

    let old = set.master_port();
    assert_eq!(
        set.sentinels[0]
            .command(&["SENTINEL", "FAILOVER", SENTINEL_SERVICE])
            .as_deref(),
        Some("OK"),
        "SENTINEL FAILOVER"
    );
    tokio::task::block_in_place(|| set.wait_for_new_master(old));
    create_trusting(&env, ca, "After");
    assert_eq!(
        server.get("/properties/").await.titles(),
        ["After", "Before"],
        "the write after the failover is on the next request"
    );
    until_hit(&server, "/properties/", Duration::from_secs(5)).await;
    assert!(
        !server.log().contains("certificate"),
        "no TLS failure:\n{}",
        server.log()
    );
}
