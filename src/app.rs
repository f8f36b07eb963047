//! The application state shared by the HTTP server and the admin commands.

use std::sync::Arc;
use std::time::Duration;

use crate::cache::keys::KeySpace;
use crate::cache::{Cache, Sizes};
use crate::config::{AdminToken, ByteSize, DatabaseUrl, KeyPrefix, RedisUrl};
use crate::db::data_version::CommitWatch;
use crate::db::{Db, DbError, DbSettings};
use crate::metrics::Metrics;
use crate::metrics::events::Cause;
use crate::server::HttpLimits;
use crate::services::Backends;

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
    /// Timeouts and limits of the HTTP server.
    pub http: HttpLimits,
    /// Turns the write API on; `None` answers writes with 403.
    pub admin_token: Option<AdminToken>,
}

pub const DEFAULT_VIEW_TTL: Duration = Duration::from_secs(900);
pub const DEFAULT_DATA_TTL: Duration = Duration::from_secs(3600);

impl Default for Settings {
    fn default() -> Self {
        Settings {
            database_url: DatabaseUrl::default(),
            redis_url: None,
            cache_prefix: KeyPrefix::default(),
            cache_size: ByteSize::DEFAULT_CACHE_SIZE,
            near_cache_size: ByteSize::DEFAULT_NEAR_CACHE_SIZE,
            view_ttl: DEFAULT_VIEW_TTL,
            data_ttl: DEFAULT_DATA_TTL,
            db: DbSettings::default(),
            http: HttpLimits::default(),
            admin_token: None,
        }
    }
}

/// What a server or a command works with. Its database and cache are reachable only
/// through `services` (see `services::Backends`).
pub struct App {
    pub settings: Settings,
    /// Per-process counters, served at `/metrics`.
    pub metrics: Arc<Metrics>,
    pub(crate) backends: Backends,
}

pub type AppState = Arc<App>;

/// What the process is: a server watches for other processes' writes; a command does
/// not (its cache starts empty and lives as long as one write).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Server,
    Command,
}

impl App {
    /// For commands: migrates a fresh SQLite file (or checks that PostgreSQL has no
    /// pending migrations), builds the pool and the cache, and checks that the database
    /// answers. An unreachable Redis is not an error: the cache connects lazily.
    pub async fn connect(settings: Settings) -> anyhow::Result<App> {
        App::connect_as(settings, Role::Command).await
    }

    /// A server also learns of commits by other processes to a SQLite file. What was
    /// committed before it started watching cannot be known (the server was down, or a
    /// writer could not reach Redis), so the cache is retired once here.
    pub(crate) async fn connect_as(settings: Settings, role: Role) -> anyhow::Result<App> {
        crate::db::migrations::prepare(&settings.database_url, &settings.db).await?;
        let metrics = Arc::new(Metrics::default());
        let keys = KeySpace::new(&settings.cache_prefix.0);
        let sizes = Sizes {
            cache: settings.cache_size.bytes(),
            near: settings.near_cache_size.bytes(),
            near_ttl: settings.view_ttl,
        };
        let cache = match &settings.redis_url {
            Some(url) => Cache::redis(url, keys, sizes, metrics.clone())?,
            None => Cache::in_process(keys, sizes, metrics.clone()),
        };
        let cannot_connect = |e: DbError| {
            let cause = match e {
                DbError::Unavailable(cause) => cause,
                other => other.to_string(),
            };
            anyhow::anyhow!(
                "cannot connect to {} at {}: {cause}",
                settings.database_url.backend_name(),
                settings.database_url.target()
            )
        };
        let db = Db::connect(
            &settings.database_url,
            settings.db,
            metrics.clone(),
            &cache.origin_tag(),
            cache.hooks().clone(),
        )
        .map_err(cannot_connect)?;
        db.check().await.map_err(cannot_connect)?;
        if role == Role::Server {
            cache.start_server_tasks();
        }
        let sqlite_writes = match (&settings.database_url, role) {
            (DatabaseUrl::Sqlite(path), Role::Server) => {
                let probe = CommitWatch::open(path)?;
                cache
                    .invalidate_everything(Cause::recovery(
                        "server started: what changed while it was down retired",
                    ))
                    .await;
                Some(probe)
            }
            _ => None,
        };
        Ok(App {
            settings,
            metrics,
            backends: Backends::new(db, cache, sqlite_writes),
        })
    }
}
