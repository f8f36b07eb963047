//! Connections to whichever Redis deployment `REDIS_URL` names: one server (plain or
//! TLS), a master found through Sentinel, or a Redis Cluster. The cache talks to all
//! three through one [`RedisConnection`]; what differs is here:
//!
//! - a Sentinel master is looked up again after any failed call, and asked of the
//!   sentinels afresh before each bump and lease renewal (what a new master may lack is
//!   the scripts' business: see `GENERATION_FUNCTION`);
//! - a cluster follows MOVED, ASK and topology changes by itself;
//! - the near-cache subscribes on the node that holds the control keys, so losing that
//!   node ends the subscription and with it the server's lease.

mod tls;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, PubSub};
use redis::cluster_async::ClusterConnection;
use redis::{
    Client, Cmd, ConnectionAddr, IntoConnectionInfo, Pipeline, RedisConnectionInfo, RedisFuture,
    RedisResult, TlsCertificates, Value,
};

use crate::config::{Credentials, RedisDeployment, RedisNode, RedisUrl};

/// A dead Redis must cost milliseconds, not seconds.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
pub const RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Clone, Debug, serde::Serialize)]
pub struct Topology {
    /// `single`, `sentinel` or `cluster`.
    pub deployment: &'static str,
    pub master: Option<String>,
    pub nodes: Vec<String>,
}

/// How the cache reaches Redis; cheap to clone.
#[derive(Clone)]
pub struct RedisLink {
    conn: RedisConnection,
    endpoint: Arc<Endpoint>,
}

enum Endpoint {
    Single(Client),
    Sentinel(Arc<SentinelMaster>),
    Cluster(ClusterSeeds),
}

impl RedisLink {
    /// Connects lazily: an unreachable Redis never stops the caller.
    pub fn new(url: &RedisUrl) -> anyhow::Result<RedisLink> {
        let certificates = tls::certificates()?;
        let (conn, endpoint) = match url.deployment() {
            RedisDeployment::Single { tls } => {
                let client = client(url.expose(), *tls, certificates.as_ref())?;
                let conn = ConnectionManager::new_lazy_with_config(
                    client.clone(),
                    manager_config(CONNECT_TIMEOUT, RESPONSE_TIMEOUT),
                )?;
                (RedisConnection::Single(conn), Endpoint::Single(client))
            }
            RedisDeployment::Sentinel {
                sentinels,
                service,
                db,
                credentials,
                sentinel_password,
                tls,
            } => {
                let master = Arc::new(SentinelMaster {
                    sentinels: sentinels
                        .iter()
                        .map(|node| {
                            let auth = Credentials {
                                username: None,
                                password: sentinel_password.clone(),
                            };
                            let client = node_client(node, *tls, &auth, 0, certificates.as_ref())?;
                            ConnectionManager::new_lazy_with_config(
                                client,
                                manager_config(SENTINEL_TIMEOUT, SENTINEL_TIMEOUT),
                            )
                        })
                        .collect::<RedisResult<_>>()?,
                    service: service.clone(),
                    node: NodeSettings {
                        tls: *tls,
                        credentials: credentials.clone(),
                        db: *db,
                        certificates: certificates.clone(),
                    },
                    current: Mutex::new(None),
                    discovery: tokio::sync::Mutex::new(()),
                });
                (
                    RedisConnection::Sentinel(SentinelConnection(master.clone())),
                    Endpoint::Sentinel(master),
                )
            }
            RedisDeployment::Cluster {
                nodes,
                credentials,
                tls,
            } => {
                let seeds = nodes
                    .iter()
                    .map(|node| node_info(node, *tls, credentials, 0))
                    .collect::<RedisResult<Vec<_>>>()?;
                let mut builder = redis::cluster::ClusterClientBuilder::new(seeds)
                    .connection_timeout(CONNECT_TIMEOUT)
                    .response_timeout(RESPONSE_TIMEOUT)
                    .retries(2)
                    .min_retry_wait(10)
                    .max_retry_wait(100);
                if let Some(password) = &credentials.password {
                    builder = builder.password(password);
                }
                if let Some(username) = &credentials.username {
                    builder = builder.username(username);
                }
                if *tls {
                    builder = builder.tls(redis::TlsMode::Secure);
                    if let Some(certs) = &certificates {
                        builder = builder.certs(certs.clone());
                    }
                }
                let client = builder.build()?;
                let conn = LazyCluster::new(client);
                (
                    RedisConnection::Cluster(conn),
                    Endpoint::Cluster(ClusterSeeds {
                        control_master: std::sync::Mutex::new(None),
                        nodes: nodes.clone(),
                        node: NodeSettings {
                            tls: *tls,
                            credentials: credentials.clone(),
                            db: 0,
                            certificates,
                        },
                    }),
                )
            }
        };
        Ok(RedisLink {
            conn,
            endpoint: Arc::new(endpoint),
        })
    }

    pub fn conn(&self) -> RedisConnection {
        self.conn.clone()
    }

    /// A subscription on the node that holds `control_key`, and with Sentinel, which
    /// master that is.
    pub async fn pubsub(&self, control_key: &str) -> RedisResult<(PubSub, Option<RedisNode>)> {
        match &*self.endpoint {
            Endpoint::Single(client) => Ok((client.get_async_pubsub().await?, None)),
            Endpoint::Sentinel(sentinel) => {
                let master = sentinel.master().await?;
                Ok((master.client.get_async_pubsub().await?, Some(master.node)))
            }
            Endpoint::Cluster(seeds) => {
                let node = self.conn.clone().cluster_node_of(control_key).await?;
                let pubsub = seeds.client(&node)?.get_async_pubsub().await?;
                *seeds
                    .control_master
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(node);
                Ok((pubsub, None))
            }
        }
    }

    /// Which deployment, its master (Sentinel: the one in use; Cluster: the one holding
    /// the control keys, as last found) and its nodes (Cluster: the seeds of the URL),
    /// for the dashboard.
    pub fn topology(&self) -> Topology {
        match &*self.endpoint {
            Endpoint::Single(_) => Topology {
                deployment: "single",
                master: None,
                nodes: Vec::new(),
            },
            Endpoint::Sentinel(sentinel) => Topology {
                deployment: "sentinel",
                master: sentinel.current().map(|master| master.node.to_string()),
                nodes: Vec::new(),
            },
            Endpoint::Cluster(seeds) => Topology {
                deployment: "cluster",
                master: seeds
                    .control_master
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .as_ref()
                    .map(RedisNode::to_string),
                nodes: seeds.nodes.iter().map(RedisNode::to_string).collect(),
            },
        }
    }

    /// True with Sentinel, where two masters may answer for a while during a failover:
    /// the old one until it is reconfigured, the new one as soon as it is promoted.
    pub fn may_have_two_masters(&self) -> bool {
        matches!(&*self.endpoint, Endpoint::Sentinel(_))
    }

    /// With Sentinel, the master the sentinels name now, asked afresh; calls go there
    /// from now on. `None` elsewhere.
    pub async fn named_master(&self) -> RedisResult<Option<RedisNode>> {
        match &*self.endpoint {
            Endpoint::Sentinel(sentinel) => {
                let named = sentinel.ask_sentinels().await?;
                if sentinel
                    .current()
                    .is_some_and(|master| master.node != named)
                {
                    sentinel.forget_any();
                }
                Ok(Some(named))
            }
            Endpoint::Single(_) | Endpoint::Cluster(_) => Ok(None),
        }
    }

    /// Each master's `INFO stats` (one, unless this is a cluster).
    pub async fn info_stats(&self) -> RedisResult<Vec<redis::InfoDict>> {
        let mut conn = self.conn.clone();
        let mut info = redis::cmd("INFO");
        info.arg("stats");
        match conn.req_packed_command(&info).await? {
            Value::Map(per_node) => per_node
                .into_iter()
                .map(|(_, stats)| redis::from_redis_value(stats).map_err(Into::into))
                .collect(),
            single => Ok(vec![redis::from_redis_value(single)?]),
        }
    }
}

/// Sentinels answer from memory: a slow one is as good as absent.
const SENTINEL_TIMEOUT: Duration = Duration::from_millis(300);

fn manager_config(connect: Duration, response: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(connect))
        .set_response_timeout(Some(response))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(200))
}

/// How to reach one node of a Sentinel or Cluster deployment.
struct NodeSettings {
    tls: bool,
    credentials: Credentials,
    db: i64,
    certificates: Option<TlsCertificates>,
}

impl NodeSettings {
    fn client(&self, node: &RedisNode) -> RedisResult<Client> {
        node_client(
            node,
            self.tls,
            &self.credentials,
            self.db,
            self.certificates.as_ref(),
        )
    }
}

fn node_info(
    node: &RedisNode,
    tls: bool,
    credentials: &Credentials,
    db: i64,
) -> RedisResult<redis::ConnectionInfo> {
    let addr = if tls {
        ConnectionAddr::TcpTls {
            host: node.host.clone(),
            port: node.port,
            insecure: false,
            tls_params: None,
        }
    } else {
        ConnectionAddr::Tcp(node.host.clone(), node.port)
    };
    let mut settings = RedisConnectionInfo::default().set_db(db);
    if let Some(username) = &credentials.username {
        settings = settings.set_username(username);
    }
    if let Some(password) = &credentials.password {
        settings = settings.set_password(password);
    }
    Ok(addr.into_connection_info()?.set_redis_settings(settings))
}

fn node_client(
    node: &RedisNode,
    tls: bool,
    credentials: &Credentials,
    db: i64,
    certificates: Option<&TlsCertificates>,
) -> RedisResult<Client> {
    client(node_info(node, tls, credentials, db)?, tls, certificates)
}

/// A client, trusting `certificates` besides the system's when it speaks TLS.
fn client<T: IntoConnectionInfo>(
    info: T,
    tls: bool,
    certificates: Option<&TlsCertificates>,
) -> RedisResult<Client> {
    match certificates {
        Some(certs) if tls => Client::build_with_tls(info, certs.clone()),
        _ => Client::open(info),
    }
}

/// One connection, whatever the deployment.
#[derive(Clone)]
pub enum RedisConnection {
    Single(ConnectionManager),
    Sentinel(SentinelConnection),
    Cluster(LazyCluster),
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConnection::Single(conn) => conn.req_packed_command(cmd),
            RedisConnection::Sentinel(conn) => conn.req_packed_command(cmd),
            RedisConnection::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConnection::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            RedisConnection::Sentinel(conn) => conn.req_packed_commands(pipeline, offset, count),
            RedisConnection::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConnection::Single(conn) => conn.get_db(),
            RedisConnection::Sentinel(conn) => conn.get_db(),
            RedisConnection::Cluster(conn) => conn.get_db(),
        }
    }
}

impl RedisConnection {
    /// The address of the cluster master that holds `key`, as the cluster announces it.
    async fn cluster_node_of(&mut self, key: &str) -> RedisResult<RedisNode> {
        let slot = i64::from(key_slot(key.as_bytes()));
        let slots = self
            .req_packed_command(redis::cmd("CLUSTER").arg("SLOTS"))
            .await?;
        let ranges: Vec<Value> = redis::from_redis_value(slots)?;
        for range in ranges {
            let Value::Array(fields) = range else {
                continue;
            };
            let (Some(start), Some(end), Some(master)) =
                (fields.first(), fields.get(1), fields.get(2))
            else {
                continue;
            };
            let (start, end): (i64, i64) = (
                redis::from_redis_value(start.clone())?,
                redis::from_redis_value(end.clone())?,
            );
            if (start..=end).contains(&slot) {
                let (host, port): (String, u16) = match master {
                    Value::Array(node) if node.len() >= 2 => (
                        redis::from_redis_value(node[0].clone())?,
                        redis::from_redis_value(node[1].clone())?,
                    ),
                    _ => break,
                };
                return Ok(RedisNode { host, port });
            }
        }
        Err(redis::RedisError::from((
            redis::ErrorKind::Client,
            "no master serves the slot of the control keys",
        )))
    }
}

/// The cluster connection, made on first use (an unreachable cluster never stops the
/// caller) and shared by every clone.
#[derive(Clone)]
pub struct LazyCluster(
    Arc<(
        redis::cluster::ClusterClient,
        tokio::sync::OnceCell<ClusterConnection>,
    )>,
);

impl LazyCluster {
    fn new(client: redis::cluster::ClusterClient) -> LazyCluster {
        LazyCluster(Arc::new((client, tokio::sync::OnceCell::new())))
    }

    async fn get(&self) -> RedisResult<ClusterConnection> {
        let (client, conn) = &*self.0;
        conn.get_or_try_init(|| client.get_async_connection())
            .await
            .cloned()
    }
}

impl ConnectionLike for LazyCluster {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move { self.get().await?.req_packed_command(cmd).await })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            self.get()
                .await?
                .req_packed_commands(pipeline, offset, count)
                .await
        })
    }

    fn get_db(&self) -> i64 {
        0
    }
}

struct ClusterSeeds {
    nodes: Vec<RedisNode>,
    node: NodeSettings,
    /// The master of the control keys' slot, as last found (for the dashboard).
    control_master: std::sync::Mutex<Option<RedisNode>>,
}

impl ClusterSeeds {
    fn client(&self, node: &RedisNode) -> RedisResult<Client> {
        // A node announcing no address is reached as the first seed was.
        let node = if node.host.is_empty() {
            RedisNode {
                host: self
                    .nodes
                    .first()
                    .map(|n| n.host.clone())
                    .unwrap_or_default(),
                port: node.port,
            }
        } else {
            node.clone()
        };
        self.node.client(&node)
    }
}

/// The Redis Cluster hash slot of a key (CRC16/XMODEM of its hash tag, or of all of it).
pub fn key_slot(key: &[u8]) -> u16 {
    let tagged = key
        .iter()
        .position(|b| *b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|b| *b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    let mut crc: u16 = 0;
    for byte in tagged {
        crc ^= u16::from(*byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

/// The master of a Sentinel-monitored service, looked up again whenever a call fails.
pub struct SentinelMaster {
    /// One kept connection per sentinel of the URL.
    sentinels: Vec<ConnectionManager>,
    service: String,
    node: NodeSettings,
    current: Mutex<Option<Master>>,
    /// One lookup at a time.
    discovery: tokio::sync::Mutex<()>,
}

#[derive(Clone)]
struct Master {
    node: RedisNode,
    client: Client,
    conn: ConnectionManager,
}

impl SentinelMaster {
    fn current(&self) -> Option<Master> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The master, asking the sentinels if it is not known.
    async fn master(&self) -> RedisResult<Master> {
        if let Some(master) = self.current() {
            return Ok(master);
        }
        let _one_at_a_time = self.discovery.lock().await;
        if let Some(master) = self.current() {
            return Ok(master);
        }
        let node = self.ask_sentinels().await?;
        let client = self.node.client(&node)?;
        let mut conn = ConnectionManager::new_lazy_with_config(
            client.clone(),
            manager_config(CONNECT_TIMEOUT, RESPONSE_TIMEOUT),
        )?;
        // A sentinel may still name a master that has just been demoted.
        let role: Value = redis::cmd("ROLE").query_async(&mut conn).await?;
        let is_master = matches!(&role, Value::Array(fields)
            if matches!(fields.first(), Some(Value::BulkString(name)) if name == b"master"));
        if !is_master {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Client,
                "the node the sentinels name is not a master (yet)",
            )));
        }
        tracing::info!(service = %self.service, master = %node, "Redis master found through Sentinel");
        let master = Master { node, client, conn };
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Some(master.clone());
        Ok(master)
    }

    fn forget_any(&self) {
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// After a failed call on `node`: the next call asks the sentinels again.
    fn forget(&self, node: &RedisNode) {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if current.as_ref().is_some_and(|master| master.node == *node) {
            *current = None;
        }
    }

    /// The master most sentinels of the URL name, asked all at once. Sentinels learn
    /// of a failover at different moments, and one cut off with the old master keeps
    /// naming it: one answer is not enough. Without a majority, an error (the cache
    /// then goes unused rather than trust a master that may be given up).
    async fn ask_sentinels(&self) -> RedisResult<RedisNode> {
        let asks = self.sentinels.iter().map(|sentinel| {
            let mut conn = sentinel.clone();
            let mut ask = redis::cmd("SENTINEL");
            ask.arg("GET-MASTER-ADDR-BY-NAME").arg(&self.service);
            async move {
                match tokio::time::timeout(
                    SENTINEL_TIMEOUT,
                    ask.query_async::<Option<(String, u16)>>(&mut conn),
                )
                .await
                {
                    Ok(Ok(Some((host, port)))) => Ok(RedisNode { host, port }),
                    Ok(Ok(None)) => Err("does not know the service".to_owned()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("did not answer in time".to_owned()),
                }
            }
        });
        let answers = futures_util::future::join_all(asks).await;
        let majority = self.sentinels.len() / 2 + 1;
        let mut named: Vec<(&RedisNode, usize)> = Vec::new();
        for node in answers.iter().flatten() {
            match named.iter_mut().find(|(seen, _)| *seen == node) {
                Some((_, votes)) => *votes += 1,
                None => named.push((node, 1)),
            }
        }
        if let Some((node, _)) = named.iter().find(|(_, votes)| *votes >= majority) {
            return Ok((*node).clone());
        }
        let why: Vec<String> = answers
            .iter()
            .map(|answer| match answer {
                Ok(node) => format!("names {node}"),
                Err(e) => e.clone(),
            })
            .collect();
        Err(redis::RedisError::from((
            redis::ErrorKind::MasterNameNotFoundBySentinel,
            "no majority of the sentinels names one master",
            format!("service `{}`: {}", self.service, why.join("; ")),
        )))
    }
}

/// Calls go to the current master; a failed call makes the next one look it up again.
#[derive(Clone)]
pub struct SentinelConnection(Arc<SentinelMaster>);

impl ConnectionLike for SentinelConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let mut master = self.0.master().await?;
            let result = master.conn.req_packed_command(cmd).await;
            if result.is_err() {
                self.0.forget(&master.node);
            }
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let mut master = self.0.master().await?;
            let result = master
                .conn
                .req_packed_commands(pipeline, offset, count)
                .await;
            if result.is_err() {
                self.0.forget(&master.node);
            }
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.0.node.db
    }
}

#[cfg(test)]
mod tests {
    use super::key_slot;

    #[test]
    fn slots_match_redis_cluster() {
        // Values from `CLUSTER KEYSLOT`.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        // An empty tag does not count; the first `}` after the first `{` ends a tag.
        assert_ne!(key_slot(b"foo{}{bar}"), key_slot(b"bar"));
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
        assert_eq!(key_slot(b"123456789"), 0x31C3);
    }
}
