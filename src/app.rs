//! The application state shared by the HTTP server and the admin commands.

use std::sync::Arc;
use std::time::Duration;

use crate::cache::Cache;
use crate::cache::keys::KeySpace;
use crate::config::{AdminToken, ByteSize, DatabaseUrl, KeyPrefix, RedisUrl};
use crate::db::data_version::DataVersionProbe;
use crate::db::{Db, DbError, DbSettings};
use crate::metrics::Metrics;
use crate::server::HttpLimits;

/// What every command needs to reach the data and the cache.
#[derive(Clone, Debug)]
pub struct Settings {
    pub database_url: DatabaseUrl,
    /// `None`: the in-process cache.
    pub redis_url: Option<RedisUrl>,
    pub cache_prefix: KeyPrefix,
    /// Most bytes the in-process cache holds.
    pub cache_size: ByteSize,
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
            view_ttl: DEFAULT_VIEW_TTL,
            data_ttl: DEFAULT_DATA_TTL,
            db: DbSettings::default(),
            http: HttpLimits::default(),
            admin_token: None,
        }
    }
}

pub struct App {
    pub settings: Settings,
    /// The repository's connection pool; only services use it.
    pub db: Db,
    /// Both cache levels; services and the view-cache layer use it.
    pub cache: Cache,
    /// Per-process counters, served at `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Embedded mode, server only: how this process learns that another process
    /// (the CLI, a second server) committed to the SQLite file. The lock is held
    /// through the invalidation, so no request can pass the check and read the cache
    /// before the change it found has retired it.
    pub sqlite_writes: Option<tokio::sync::Mutex<DataVersionProbe>>,
}

pub type AppState = Arc<App>;

impl App {
    /// Builds the pool and the cache and checks that the database answers. An
    /// unreachable Redis is not an error: the cache connects lazily.
    pub async fn connect(settings: Settings) -> anyhow::Result<App> {
        crate::db::migrations::prepare(&settings.database_url, &settings.db).await?;
        let metrics = Arc::new(Metrics::default());
        let keys = KeySpace::new(&settings.cache_prefix.0);
        let cache = match &settings.redis_url {
            Some(url) => Cache::redis(url, keys, metrics.clone())?,
            None => Cache::in_process(keys, settings.cache_size.bytes(), metrics.clone()),
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
        Ok(App {
            settings,
            db,
            cache,
            metrics,
            sqlite_writes: None,
        })
    }

    /// Makes this process notice commits by other processes to the SQLite file. What
    /// was committed before it started watching cannot be known (the server was down,
    /// or a writer could not reach Redis), so the cache is retired once here.
    pub async fn watch_sqlite_writes(&mut self) -> anyhow::Result<()> {
        if let DatabaseUrl::Sqlite(path) = &self.settings.database_url {
            self.sqlite_writes = Some(tokio::sync::Mutex::new(DataVersionProbe::open(
                path,
                &self.settings.db,
            )?));
            self.cache.invalidate_everything().await;
        }
        Ok(())
    }
}
