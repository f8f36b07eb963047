//! Settings every command shares, and every default of them: the one place a default
//! is written (the CLI's flags and `Settings::default()` both read these).

use std::time::Duration;

use super::{AdminToken, ByteSize, DatabaseUrl, KeyPrefix, RedisUrl, ReplicaUrl, Seconds, Ttl};

/// What every command needs to reach the data and the cache.
#[derive(Clone, Debug)]
pub struct Settings {
    pub database_url: DatabaseUrl,
    /// `None`: the in-process cache.
    pub redis_url: Option<RedisUrl>,
    pub cache_prefix: KeyPrefix,
    /// Most bytes the in-process cache holds.
    pub cache_size: ByteSize,
    /// Most bytes of ready responses each server keeps in its memory.
    pub near_cache_size: ByteSize,
    /// How long whole responses stay cached (a write retires them sooner).
    pub view_ttl: Duration,
    /// How long query results stay cached (a write retires them sooner).
    pub data_ttl: Duration,
    /// Pool size and timeouts of the database.
    pub db: DbSettings,
    /// Streaming replicas that may serve cache misses, and when they may not.
    pub replicas: ReplicaSettings,
    /// Timeouts and limits of the HTTP server.
    pub http: HttpLimits,
    /// Turns the write API on; `None` answers writes with 403.
    pub admin_token: Option<AdminToken>,
    /// Host names the admin address answers to besides loopback names and IP literals.
    pub admin_allowed_hosts: Vec<AllowedHost>,
}

pub const DEFAULT_VIEW_TTL: Ttl = Ttl(Duration::from_secs(900));
pub const DEFAULT_DATA_TTL: Ttl = Ttl(Duration::from_secs(3600));

impl Default for Settings {
    fn default() -> Self {
        Settings {
            database_url: DatabaseUrl::default(),
            redis_url: None,
            cache_prefix: KeyPrefix::default(),
            cache_size: ByteSize::DEFAULT_CACHE_SIZE,
            near_cache_size: ByteSize::DEFAULT_NEAR_CACHE_SIZE,
            view_ttl: DEFAULT_VIEW_TTL.duration(),
            data_ttl: DEFAULT_DATA_TTL.duration(),
            db: DbSettings::default(),
            replicas: ReplicaSettings::default(),
            http: HttpLimits::default(),
            admin_token: None,
            admin_allowed_hosts: Vec::new(),
        }
    }
}

/// Limits on the database, shared by the server and every command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DbSettings {
    /// Most pooled connections per process for reads (writes have their own).
    pub max_connections: usize,
    /// Each replica's pool, when the operator set one; otherwise the default for the
    /// replica's own address (see [`default_pool_size`]).
    pub replica_max_connections: Option<usize>,
    /// How long making one connection may take.
    pub connect_timeout: Duration,
    /// How long a request waits for a pooled connection (making one included).
    pub pool_timeout: Duration,
    /// PostgreSQL's `statement_timeout`, and how long a request waits for the answers
    /// of its statements before giving up on the connection. SQLite's busy timeout.
    pub statement_timeout: Duration,
    /// TCP keepalive idle time and probe interval of PostgreSQL connections.
    pub keepalive: Duration,
}

pub const DEFAULT_MAX_CONNECTIONS: usize = 10;
pub const DEFAULT_CONNECT_TIMEOUT: Seconds = Seconds(Duration::from_secs(2));
pub const DEFAULT_POOL_TIMEOUT: Seconds = Seconds(Duration::from_secs(2));
pub const DEFAULT_STATEMENT_TIMEOUT: Seconds = Seconds(Duration::from_secs(3));
pub const DEFAULT_KEEPALIVE: Seconds = Seconds(Duration::from_secs(5));

/// The pool size when none is set. A database on this machine (SQLite; PostgreSQL at a
/// loopback address or a Unix socket) runs its statements on this machine's cores:
/// more statements at once than cores only contend for them, and every other statement
/// (a write's, above all) then waits longer for a core. Measured with bench/mix on 2
/// cores: 2 readers serve as many misses as 10 with a far shorter tail; SQLite's take
/// 40 MB less, and on PostgreSQL a write's acknowledgement at the 99th percentile took
/// 21-23 ms against 49-137. A database elsewhere has cores of its own, and more
/// connections overlap the round trips to it.
pub fn default_pool_size(url: &DatabaseUrl) -> usize {
    if !url.is_on_this_machine() {
        return DEFAULT_MAX_CONNECTIONS;
    }
    std::thread::available_parallelism()
        .map_or(2, std::num::NonZeroUsize::get)
        .max(2)
}

impl Default for DbSettings {
    fn default() -> Self {
        DbSettings {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            replica_max_connections: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT.duration(),
            pool_timeout: DEFAULT_POOL_TIMEOUT.duration(),
            statement_timeout: DEFAULT_STATEMENT_TIMEOUT.duration(),
            keepalive: DEFAULT_KEEPALIVE.duration(),
        }
    }
}

/// Read replicas (PostgreSQL + Redis only): none by default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaSettings {
    pub urls: Vec<ReplicaUrl>,
    /// A replica whose replay is further behind the primary than this is skipped.
    pub max_lag: Duration,
    /// Or whose replay is this many bytes of WAL behind.
    pub max_lag_bytes: u64,
}

pub const DEFAULT_REPLICA_MAX_LAG: Seconds = Seconds(Duration::from_secs(1));
pub const DEFAULT_REPLICA_MAX_LAG_BYTES: ByteSize = ByteSize(16 << 20);

impl Default for ReplicaSettings {
    fn default() -> Self {
        ReplicaSettings {
            urls: Vec::new(),
            max_lag: DEFAULT_REPLICA_MAX_LAG.duration(),
            max_lag_bytes: DEFAULT_REPLICA_MAX_LAG_BYTES.bytes(),
        }
    }
}

/// Timeouts and limits of the HTTP server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    pub header_read_timeout: Duration,
    pub body_timeout: Duration,
    pub idle_timeout: Duration,
    pub shutdown_timeout: Duration,
    /// `None`: as many as the file-descriptor limit allows (see `server::connection_cap`).
    pub max_connections: Option<usize>,
}

/// Where `serve` listens, and where `cache-metrics` and `healthcheck` look for it.
pub const DEFAULT_BIND: std::net::SocketAddr = std::net::SocketAddr::V4(
    std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 8000),
);
pub const DEFAULT_HEADER_READ_TIMEOUT: Seconds = Seconds(Duration::from_secs(10));
pub const DEFAULT_BODY_TIMEOUT: Seconds = Seconds(Duration::from_secs(10));
pub const DEFAULT_IDLE_TIMEOUT: Seconds = Seconds(Duration::from_secs(60));
pub const DEFAULT_SHUTDOWN_TIMEOUT: Seconds = Seconds(Duration::from_secs(30));

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT.duration(),
            body_timeout: DEFAULT_BODY_TIMEOUT.duration(),
            idle_timeout: DEFAULT_IDLE_TIMEOUT.duration(),
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT.duration(),
            max_connections: None,
        }
    }
}

/// A host name the admin address answers to (`--admin-allowed-hosts`), besides loopback
/// names and IP literals: the DNS-rebinding defence of the dashboard lets a browser in
/// only under names the operator chose. Kept in lower case without a trailing dot, as
/// requests are compared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowedHost(String);

impl AllowedHost {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for AllowedHost {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let name = raw.trim();
        let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        // A DNS name, without a port: the port is the admin address's own.
        let valid = !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if valid {
            Ok(AllowedHost(name))
        } else {
            Err(format!(
                "`{}` is not a host name: letters, digits, `-` and `_` in dot-separated labels, without a port",
                raw.escape_debug()
            ))
        }
    }
}
