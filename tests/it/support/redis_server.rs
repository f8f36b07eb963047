//! Redis servers of a test's own, on free ports, for tests that freeze, kill or restart
//! Redis (the shared one is never touched that way): a single server, a Sentinel set
//! (master, replica, sentinels) and a 3-master Cluster, each plain or TLS-only with a
//! certificate made by openssl. Every process is killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng as _;

pub struct OwnRedis {
    child: Child,
    port: u16,
    args: Vec<String>,
    /// TLS-only (clients, replication and cluster bus) with these certificates.
    tls: Option<Arc<Certificates>>,
    /// Its working directory: a replica's full sync writes an RDB file there.
    _dir: tempfile::TempDir,
}

/// A port that is free, and whose cluster bus port (+10000) is free too.
pub fn free_port() -> u16 {
    for _ in 0..200 {
        let port = rand::rng().random_range(20_000..30_000);
        let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + 10_000) {
            return port;
        }
    }
    panic!("no free port pair");
}

impl OwnRedis {
    /// A redis-server of the test's own, on a free port.
    pub fn start() -> OwnRedis {
        OwnRedis::start_with(free_port(), Vec::new())
    }

    /// A redis-server that speaks TLS only, with a certificate for localhost and
    /// 127.0.0.1 signed by a CA made for the test (see [`OwnRedis::ca_file`]).
    pub fn start_tls() -> OwnRedis {
        OwnRedis::spawn(
            free_port(),
            Vec::new(),
            Some(Arc::new(Certificates::make())),
        )
    }

    /// A redis-server on `port` with `args` added to the test defaults (a config file,
    /// which must come first, may lead them).
    pub fn start_with(port: u16, args: Vec<String>) -> OwnRedis {
        OwnRedis::spawn(port, args, None)
    }

    /// [`OwnRedis::start_with`], TLS-only with `tls` when given.
    fn spawn(port: u16, args: Vec<String>, tls: Option<Arc<Certificates>>) -> OwnRedis {
        let dir = tempfile::tempdir().expect("temp dir");
        let config_file = args.first().filter(|arg| !arg.starts_with("--"));
        let options = &args[usize::from(config_file.is_some())..];
        let port_args = match &tls {
            Some(certificates) => {
                let mut tls_args = vec![
                    "--port".to_owned(),
                    "0".to_owned(),
                    "--tls-port".to_owned(),
                    port.to_string(),
                ];
                tls_args.extend(certificates.server_args());
                tls_args
            }
            None => vec!["--port".to_owned(), port.to_string()],
        };
        let spawned = Command::new("redis-server")
            .args(config_file)
            .arg("--dir")
            .arg(dir.path())
            .args(port_args)
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(options)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = spawned.unwrap_or_else(|e| panic!("redis-server is needed for this test: {e}"));
        let redis = OwnRedis {
            child,
            port,
            args,
            tls,
            _dir: dir,
        };
        redis.wait_until_up();
        redis
    }

    fn wait_until_up(&self) {
        for _ in 0..250 {
            if self.command(&["PING"]).is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not start on port {}", self.port);
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How clients reach it: by name over TLS (the certificate's), by address without.
    fn address(&self) -> String {
        match self.tls {
            Some(_) => format!("localhost:{}", self.port),
            None => format!("127.0.0.1:{}", self.port),
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://{}/", self.address())
    }

    /// The CA that signed a TLS-only server's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.tls.as_ref().expect("a TLS-only server").ca_file()
    }

    /// One command through redis-cli; its output, or None when it failed.
    pub fn command(&self, args: &[&str]) -> Option<String> {
        let ca = self.tls.as_ref().map(|certificates| certificates.ca_file());
        redis_cli(self.port, ca.as_deref(), args)
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills the server (its data is lost) and starts a new one on the same port.
    pub fn restart(&mut self) {
        self.kill();
        let args = std::mem::take(&mut self.args);
        *self = OwnRedis::spawn(self.port, args, self.tls.clone());
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// redis-cli on `port`, over TLS trusting `ca` when given; its output, or None when it
/// failed or Redis answered an error.
fn redis_cli(port: u16, ca: Option<&Path>, args: &[&str]) -> Option<String> {
    let mut command = Command::new("redis-cli");
    if let Some(ca) = ca {
        command.args(["--tls", "--cacert"]).arg(ca);
    }
    let output = command
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    (output.status.success() && !text.starts_with("ERR") && !text.starts_with("Could not connect"))
        .then_some(text)
}

/// Polls `condition` every 50 ms for up to `bound`.
pub fn wait_for(bound: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + bound;
    while Instant::now() < deadline {
        if condition() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what}: not within {bound:?}");
}

pub const SENTINEL_SERVICE: &str = "listings-test";

/// A master, a replica and three sentinels watching them (quorum 2, down after 1 s).
pub struct SentinelSet {
    pub servers: Vec<OwnRedis>,
    pub sentinels: Vec<OwnRedis>,
    _dir: tempfile::TempDir,
}

impl SentinelSet {
    pub fn start() -> SentinelSet {
        SentinelSet::start_in(None)
    }

    /// Every process TLS-only, replication and sentinels included.
    pub fn start_tls() -> SentinelSet {
        SentinelSet::start_in(Some(Arc::new(Certificates::make())))
    }

    fn start_in(tls: Option<Arc<Certificates>>) -> SentinelSet {
        let dir = tempfile::tempdir().expect("temp dir");
        let master = OwnRedis::spawn(free_port(), Vec::new(), tls.clone());
        let replica = OwnRedis::spawn(
            free_port(),
            vec![
                "--replicaof".into(),
                "127.0.0.1".into(),
                master.port().to_string(),
            ],
            tls.clone(),
        );
        wait_for(Duration::from_secs(10), "the replica syncs", || {
            replica
                .command(&["INFO", "replication"])
                .is_some_and(|info| info.contains("master_link_status:up"))
        });
        let sentinels = (0..3)
            .map(|i| {
                let config = dir.path().join(format!("sentinel-{i}.conf"));
                std::fs::write(
                    &config,
                    format!(
                        "sentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {} 2\n\
                         sentinel down-after-milliseconds {SENTINEL_SERVICE} 1000\n\
                         sentinel failover-timeout {SENTINEL_SERVICE} 5000\n\
                         sentinel parallel-syncs {SENTINEL_SERVICE} 1\n",
                        master.port()
                    ),
                )
                .expect("sentinel config");
                OwnRedis::spawn(
                    free_port(),
                    vec![config.display().to_string(), "--sentinel".into()],
                    tls.clone(),
                )
            })
            .collect();
        let set = SentinelSet {
            servers: vec![master, replica],
            sentinels,
            _dir: dir,
        };
        wait_for(
            Duration::from_secs(15),
            "every sentinel knows the replica and the other sentinels",
            || {
                set.sentinels.iter().all(|sentinel| {
                    let knows = |what: &str| {
                        sentinel
                            .command(&["SENTINEL", what, SENTINEL_SERVICE])
                            .is_some_and(|answer| !answer.is_empty())
                    };
                    knows("REPLICAS") && knows("SENTINELS")
                })
            },
        );
        set
    }

    pub fn url(&self) -> String {
        let sentinels: Vec<String> = self.sentinels.iter().map(OwnRedis::address).collect();
        let scheme = if self.servers[0].tls.is_some() {
            "rediss+sentinel"
        } else {
            "redis+sentinel"
        };
        format!("{scheme}://{}/{SENTINEL_SERVICE}", sentinels.join(","))
    }

    pub fn ca_file(&self) -> PathBuf {
        self.servers[0].ca_file()
    }

    /// The port of the master `sentinel` names now.
    fn named_by(sentinel: &OwnRedis) -> Option<u16> {
        let answer =
            sentinel.command(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_SERVICE])?;
        answer.lines().nth(1)?.trim().parse().ok()
    }

    /// The port of the master most sentinels name now.
    pub fn master_port(&self) -> u16 {
        let named: Vec<u16> = self.sentinels.iter().filter_map(Self::named_by).collect();
        named
            .iter()
            .copied()
            .find(|port| named.iter().filter(|p| *p == port).count() >= 2)
            .unwrap_or_else(|| panic!("no majority of the sentinels names a master: {named:?}"))
    }

    pub fn master(&mut self) -> &mut OwnRedis {
        let port = self.master_port();
        self.servers
            .iter_mut()
            .find(|server| server.port() == port)
            .expect("the master is one of ours")
    }

    /// The master every sentinel names, once they agree and it says it is one.
    fn agreed_master_port(&self) -> Option<u16> {
        let named: Vec<Option<u16>> = self.sentinels.iter().map(Self::named_by).collect();
        let port = (*named.first()?)?;
        let says_so = self
            .servers
            .iter()
            .find(|server| server.port() == port)?
            .command(&["ROLE"])
            .is_some_and(|role| role.starts_with("master"));
        (named.iter().all(|p| *p == Some(port)) && says_so).then_some(port)
    }

    /// Waits until every sentinel names a master other than `old`, and that master says
    /// it is one; returns when that happened.
    pub fn wait_for_new_master(&self, old: u16) -> Instant {
        wait_for(Duration::from_secs(30), "a new master", || {
            self.agreed_master_port().is_some_and(|port| port != old)
        });
        Instant::now()
    }
}

/// A Redis Cluster of three masters without replicas, made by `redis-cli --cluster
/// create`; a node may fail without the others refusing their slots.
pub struct RedisCluster {
    pub nodes: Vec<OwnRedis>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        RedisCluster::start_in(None)
    }

    /// Every node TLS-only, the cluster bus included.
    pub fn start_tls() -> RedisCluster {
        RedisCluster::start_in(Some(Arc::new(Certificates::make())))
    }

    fn start_in(tls: Option<Arc<Certificates>>) -> RedisCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let nodes: Vec<OwnRedis> = (0..3)
            .map(|_| {
                let port = free_port();
                OwnRedis::spawn(
                    port,
                    vec![
                        "--cluster-enabled".into(),
                        "yes".into(),
                        "--cluster-config-file".into(),
                        format!("nodes-{port}.conf"),
                        "--cluster-node-timeout".into(),
                        "1000".into(),
                        "--cluster-require-full-coverage".into(),
                        "no".into(),
                        "--dir".into(),
                        dir.path().display().to_string(),
                    ],
                    tls.clone(),
                )
            })
            .collect();
        let ca = tls.as_ref().map(|certificates| certificates.ca_file());
        let mut create = Command::new("redis-cli");
        if let Some(ca) = &ca {
            create.args(["--tls", "--cacert"]).arg(ca);
        }
        let created = create
            .args(["--cluster", "create"])
            .args(
                nodes
                    .iter()
                    .map(|node| format!("127.0.0.1:{}", node.port())),
            )
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli");
        assert!(created.success(), "redis-cli --cluster create failed");
        let cluster = RedisCluster { nodes, _dir: dir };
        wait_for(
            Duration::from_secs(20),
            "the cluster is ok on every node",
            || {
                cluster.nodes.iter().all(|node| {
                    node.command(&["CLUSTER", "INFO"])
                        .is_some_and(|info| info.contains("cluster_state:ok"))
                })
            },
        );
        cluster
    }

    pub fn url(&self) -> String {
        let nodes: Vec<String> = self.nodes.iter().map(OwnRedis::address).collect();
        let scheme = if self.nodes[0].tls.is_some() {
            "rediss+cluster"
        } else {
            "redis+cluster"
        };
        format!("{scheme}://{}", nodes.join(","))
    }

    pub fn ca_file(&self) -> PathBuf {
        self.nodes[0].ca_file()
    }

    /// The node that serves `key`'s slot.
    pub fn node_of(&mut self, key: &str) -> &mut OwnRedis {
        let slot: u16 = self.nodes[0]
            .command(&["CLUSTER", "KEYSLOT", key])
            .and_then(|slot| slot.parse().ok())
            .expect("CLUSTER KEYSLOT");
        let nodes = self.nodes[0]
            .command(&["CLUSTER", "NODES"])
            .expect("CLUSTER NODES");
        let port = owner_port(&nodes, slot).expect("an owner of the slot");
        self.nodes
            .iter_mut()
            .find(|node| node.port() == port)
            .expect("the owner is one of ours")
    }

    /// Moves the slot of `key` to the node on `to`, keys and all, the way resharding
    /// does (IMPORTING / MIGRATING, MIGRATE, then the new owner announced): clients
    /// meet ASK while it moves and MOVED after.
    pub fn move_slot_of(&mut self, key: &str, to: u16) {
        let from = self.node_of(key).port();
        assert_ne!(from, to, "the slot is already there");
        // Each node answers through its own redis-cli (plain or TLS).
        let redis_cli = |port: u16, args: &[&str]| {
            self.nodes
                .iter()
                .find(|node| node.port() == port)
                .and_then(|node| node.command(args))
        };
        let id = |port: u16| redis_cli(port, &["CLUSTER", "MYID"]).expect("CLUSTER MYID");
        let (from_id, to_id) = (id(from), id(to));
        let slot = redis_cli(from, &["CLUSTER", "KEYSLOT", key]).expect("CLUSTER KEYSLOT");
        let setslot = |port: u16, args: &[&str]| {
            let mut command = vec!["CLUSTER", "SETSLOT", slot.as_str()];
            command.extend_from_slice(args);
            assert_eq!(
                redis_cli(port, &command).as_deref(),
                Some("OK"),
                "{command:?}"
            );
        };
        setslot(to, &["IMPORTING", &from_id]);
        setslot(from, &["MIGRATING", &to_id]);
        loop {
            let keys = redis_cli(from, &["CLUSTER", "GETKEYSINSLOT", &slot, "100"])
                .expect("CLUSTER GETKEYSINSLOT");
            let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
            if keys.is_empty() {
                break;
            }
            let port = to.to_string();
            let mut migrate = vec![
                "MIGRATE",
                "127.0.0.1",
                port.as_str(),
                "",
                "0",
                "5000",
                "KEYS",
            ];
            migrate.extend(keys);
            assert_eq!(redis_cli(from, &migrate).as_deref(), Some("OK"), "MIGRATE");
        }
        setslot(to, &["NODE", &to_id]);
        setslot(from, &["NODE", &to_id]);
        for node in &self.nodes {
            if node.port() != from && node.port() != to {
                setslot(node.port(), &["NODE", &to_id]);
            }
        }
    }

    /// How many keys each node holds.
    pub fn key_counts(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .map(|node| {
                node.command(&["DBSIZE"])
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_default()
            })
            .collect()
    }
}

/// From `CLUSTER NODES`, the port of the master serving `slot`.
fn owner_port(nodes: &str, slot: u16) -> Option<u16> {
    let contains = |range: &str| {
        let (from, to) = range.split_once('-').unwrap_or((range, range));
        match (from.parse::<u16>(), to.parse::<u16>()) {
            (Ok(from), Ok(to)) => (from..=to).contains(&slot),
            _ => false,
        }
    };
    nodes.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let is_master = fields.get(2)?.contains("master");
        let serves = fields.iter().skip(8).any(|range| contains(range));
        let port = fields.get(1)?.split(['@', ':']).nth(1)?.parse().ok()?;
        (is_master && serves).then_some(port)
    })
}

/// A CA made for a test, and a certificate for localhost and 127.0.0.1 it signed.
pub struct Certificates {
    dir: tempfile::TempDir,
}

impl Certificates {
    fn make() -> Certificates {
        let dir = tempfile::tempdir().expect("temp dir");
        make_certificates(dir.path());
        Certificates { dir }
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A TLS-only server's options; replicas, sentinels and the cluster bus speak TLS
    /// too.
    fn server_args(&self) -> Vec<String> {
        let file = |name: &str| self.dir.path().join(name).display().to_string();
        [
            ("--tls-cert-file", file("server.pem")),
            ("--tls-key-file", file("server.key")),
            ("--tls-ca-cert-file", file("ca.pem")),
            ("--tls-auth-clients", "no".to_owned()),
            ("--tls-replication", "yes".to_owned()),
            ("--tls-cluster", "yes".to_owned()),
        ]
        .into_iter()
        .flat_map(|(option, value)| [option.to_owned(), value])
        .collect()
    }
}

/// Runs `openssl` with `args` in `dir`; its complaint is the test's failure.
pub fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("openssl is needed for this test: {e}"));
    assert!(
        output.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn make_certificates(dir: &Path) {
    let run = |args: &[&str]| openssl(dir, args);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .expect("extensions file");
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=listings test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        "-out",
        "server.pem",
    ]);
}
