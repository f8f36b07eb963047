//! The only layer that touches the database and the cache: [`App`] owns both, privately,
//! and its services are the only way to them. Cache-aware reads, writes that commit and
//! then invalidate, the view level's whole responses, the shared statistics.
//!
//! The compiler keeps the rule: `db` and `cache` are private modules here, so `http`,
//! `cli` and `dashboard` cannot name the database, the cache or their errors; every
//! mutation path goes through a service and so invalidates by construction.

mod cache;
pub mod change_listener;
mod count_memo;
mod db;
pub mod properties;
mod property_rows;
mod sqlite_writes;
mod stats;
pub mod views;
pub mod wal;

use std::sync::Arc;
use std::time::Duration;

use crate::config::{DatabaseUrl, Settings};
use crate::metrics::Metrics;
use crate::metrics::events::{Cause, Origin};
use cache::keys::KeySpace;
use cache::{Cache, Sizes};
use count_memo::CountMemo;
use db::{Db, DbError, Fault};
use sqlite_writes::SqliteWrites;

pub use cache::CacheStatus;
pub use cache::values::StoredPage;

/// What a response depends on, for the view level to keep with it; opaque outside this
/// layer. A handler's response that carries none is never cached.
#[derive(Clone, Debug)]
pub struct Dependencies(cache::tags::TagSet);
/// How long a server's near-cache lease lasts, for tests that freeze Redis past it.
#[cfg(feature = "test-hooks")]
pub use cache::near_lease::LEASE as NEAR_LEASE;

/// Schema migrations, for `listings migrate` and for tests that prepare a database.
pub mod migrations {
    pub use super::db::migrations::{
        Migrated, MigrationStatus, Rekey, migrate, run_pending, status,
    };
}
/// A page and its count in one statement, for tests that watch how PostgreSQL plans it.
#[cfg(feature = "test-hooks")]
pub use db::page_statement::pg_page_with_count;
pub use db::{probe_replicas, probe_transport};
pub use stats::{CacheBackendStatus, RedisStats, SharedCacheStats};

/// What a server or a command works with. Its database and cache are private fields:
/// only the services in this module reach them.
pub struct App {
    pub settings: Settings,
    /// Per-process counters, served at `/metrics`.
    pub metrics: Arc<Metrics>,
    db: Db,
    cache: Cache,
    /// The counts pages of one search share (see `count_memo`).
    counts: CountMemo,
    /// Embedded mode, server only: how this process learns what was committed to the
    /// SQLite file, by another process (the CLI, a second server) or by itself.
    sqlite_writes: Option<SqliteWrites>,
}

pub type AppState = Arc<App>;

/// What the process is: a server watches for other processes' writes; a command does
/// not (its cache starts empty and lives as long as one write).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
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

    /// For `serve` (see `BoundServer::build`): watches for other processes' writes.
    pub async fn connect_server(settings: Settings) -> anyhow::Result<App> {
        App::connect_as(settings, Role::Server).await
    }

    /// A server also learns of commits by other processes to a SQLite file. What was
    /// committed before it started watching cannot be known (the server was down, or a
    /// writer could not reach Redis), so the cache is retired once here.
    async fn connect_as(settings: Settings, role: Role) -> anyhow::Result<App> {
        check_replica_settings(&settings)?;
        db::migrations::prepare(&settings.database_url, &settings.db).await?;
        let metrics = Arc::new(Metrics::default());
        let keys = KeySpace::new(settings.cache_prefix.as_str());
        let sizes = Sizes {
            cache: settings.cache_size.bytes(),
            near: settings.near_cache_size.bytes(),
            near_ttl: settings.view_ttl,
        };
        let mut cache = match &settings.redis_url {
            Some(url) => Cache::redis(url, keys, sizes, metrics.clone())?,
            None => Cache::in_process(keys, sizes, metrics.clone()),
        };
        // Commands read from the primary; their writes raise the watermark all the same.
        let read_from_replicas = role == Role::Server && !settings.replicas.urls.is_empty();
        if read_from_replicas {
            cache = cache.with_replica_floors();
        }
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
            &settings.replicas,
            read_from_replicas,
            metrics.clone(),
            &cache.origin_tag(),
        )
        .map_err(cannot_connect)?;
        #[cfg(feature = "test-hooks")]
        let db = db.with_hooks(cache.hooks().clone());
        db.check().await.map_err(cannot_connect)?;
        if role == Role::Server {
            cache.start_server_tasks();
        }
        let sqlite_writes = match (&settings.database_url, role) {
            (DatabaseUrl::Sqlite(path), Role::Server) => {
                let probe = SqliteWrites::open(path, &settings.db).await?;
                cache
                    .invalidate_everything(Cause::recovery(
                        "server started: what changed while it was down retired",
                    ))
                    .await;
                Some(probe)
            }
            _ => None,
        };
        let app = App {
            counts: CountMemo::new(settings.data_ttl),
            settings,
            metrics,
            db,
            cache,
            sqlite_writes,
        };
        Ok(app)
    }

    /// A server with replicas checks them now, then a few times a second while the
    /// app lives, and makes an unknown watermark known again (see `lua::BUMP`): it reads
    /// the watermark, then the primary's position, which is then at or past every write
    /// whose bump made it unknown.
    pub async fn start_replica_checks(self: &Arc<App>) {
        if !self.db().reads_replicas() {
            return;
        }
        self.check_replicas(true).await;
        let app = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(db::replicas::CHECK_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            every.tick().await;
            loop {
                every.tick().await;
                let Some(app) = app.upgrade() else { return };
                app.check_replicas(false).await;
            }
        });
    }

    /// `wait`: until every replica was checked (the first round, before serving).
    async fn check_replicas(&self, wait: bool) {
        let seen = self.cache().watermark().await;
        let primary = match wait {
            true => self.db().check_replicas_now().await,
            false => self.db().check_replicas().await,
        };
        if let (Some(seen), Some(primary)) = (seen, primary)
            && seen.known.is_none()
            && self.cache().heal_watermark(&seen, primary).await
        {
            tracing::info!(position = %primary, "the replicas' watermark is known again");
        }
    }
}

/// Replicas are kept fresh by a watermark in Redis beside the cache's clock; the
/// embedded mode has neither PostgreSQL nor a shared clock.
fn check_replica_settings(settings: &Settings) -> anyhow::Result<()> {
    if settings.replicas.urls.is_empty() {
        return Ok(());
    }
    if !matches!(settings.database_url, DatabaseUrl::Postgres(_)) {
        anyhow::bail!(
            "--database-replica-url (DATABASE_REPLICA_URLS) needs DATABASE_URL to be PostgreSQL: replicas are PostgreSQL streaming replicas, and the embedded SQLite mode has none"
        );
    }
    if settings.redis_url.is_none() {
        anyhow::bail!(
            "--database-replica-url (DATABASE_REPLICA_URLS) needs REDIS_URL: the watermark that keeps reads from replicas fresh lives in Redis, beside the cache's clock"
        );
    }
    Ok(())
}

impl App {
    fn db(&self) -> &Db {
        &self.db
    }

    fn cache(&self) -> &Cache {
        &self.cache
    }

    /// How the database connections travel (see `Db::transport`).
    pub async fn database_transport(&self) -> Option<String> {
        self.db().transport().await
    }

    /// Where the cache is, for the start-up line; no secrets.
    pub fn cache_description(&self) -> String {
        self.cache().describe()
    }

    pub fn cache_status(&self) -> crate::service::cache::CacheBackendStatus {
        self.cache().status()
    }

    /// Every process's counters summed (Redis mode); `None` with the in-process cache
    /// or when Redis does not answer.
    pub async fn shared_counts(&self) -> Option<crate::metrics::Counts> {
        self.cache().shared_counts().await
    }

    /// Adds this process's hit and miss counts to the shared ones (Redis), for a
    /// command about to exit; servers do it once a second.
    pub async fn flush_counts(&self) {
        self.cache().flush_counts().await;
    }

    /// Waits (at most `limit`) to learn whether writes the database did not confirm were
    /// applied, and to tell the servers if they were; false if some are still unknown.
    pub async fn settle_unconfirmed_writes(&self, limit: Duration) -> bool {
        self.db().settle_unconfirmed_writes(limit).await
    }

    /// Pause points for race tests, shared by the cache and the database layer.
    #[cfg(feature = "test-hooks")]
    pub fn hooks(&self) -> &crate::test_hooks::TestHooks {
        self.cache().hooks()
    }

    /// A PostgreSQL setting as the pool's connections have it (see `Db::pooled_setting`).
    #[cfg(feature = "test-hooks")]
    pub async fn pooled_setting(&self, name: &str) -> Option<String> {
        self.db().pooled_setting(name).await
    }

    /// For tests that need a settled cache: does now what the next read would do about
    /// other processes' commits to a SQLite file.
    #[cfg(feature = "test-hooks")]
    pub async fn notice_other_writers(&self) {
        catch_up_with_other_writers(self).await;
    }
}

/// How a service call failed, as its callers tell failures apart.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("not found")]
    NotFound,
    /// A conditional write's precondition was false: nothing was written.
    #[error("precondition failed")]
    PreconditionFailed,
    /// The database cannot serve now (down, too slow, still locked): retry later.
    #[error("{0}")]
    Unavailable(String),
    /// A write's COMMIT was sent but not confirmed: it may still be applied.
    #[error("{0}")]
    OutcomeUnknown(String),
    /// The database refused a statement: a fault of this program, not of the request.
    #[error("{0}")]
    Failed(String),
}

impl From<DbError> for ServiceError {
    fn from(e: DbError) -> Self {
        match e.fault() {
            Fault::NotFound => ServiceError::NotFound,
            Fault::PreconditionFailed => ServiceError::PreconditionFailed,
            Fault::Unavailable => ServiceError::Unavailable(e.to_string()),
            Fault::OutcomeUnknown => ServiceError::OutcomeUnknown(e.to_string()),
            Fault::Failed => ServiceError::Failed(e.to_string()),
        }
    }
}

/// Embedded mode: if anything was committed to the SQLite file since the last check,
/// retire what it changed before this read can be served from the cache.
async fn catch_up_with_other_writers(app: &App) {
    if let Some(writes) = &app.sqlite_writes {
        let cause = Cause {
            what: "change committed by another process",
            origin: Origin::OtherProcess,
        };
        writes.catch_up(app.cache(), cause).await;
    }
}
