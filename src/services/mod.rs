//! The only code that touches both the database and the cache: cache-aware reads, and
//! writes that commit, then invalidate. Handlers and commands call these, never the
//! repository or the cache directly, so every mutation path invalidates by construction.
//!
//! The compiler keeps that rule: an [`App`]'s database and cache live in [`Backends`],
//! whose fields only this module and its children can reach.

pub mod change_listener;
pub mod properties;
pub mod views;

use std::time::Duration;

use crate::app::App;
use crate::cache::Cache;
use crate::db::data_version::CommitWatch;
use crate::db::{Db, DbError};
use crate::domain::ValidationErrors;
use crate::metrics::events::{Cause, Origin};

/// The database and the cache of an [`App`], for services only.
pub struct Backends {
    db: Db,
    cache: Cache,
    /// Embedded mode, server only: how this process learns that another process (the
    /// CLI, a second server) committed to the SQLite file.
    sqlite_writes: Option<CommitWatch>,
}

impl Backends {
    pub(crate) fn new(db: Db, cache: Cache, sqlite_writes: Option<CommitWatch>) -> Backends {
        Backends {
            db,
            cache,
            sqlite_writes,
        }
    }
}

impl App {
    fn db(&self) -> &Db {
        &self.backends.db
    }

    fn cache(&self) -> &Cache {
        &self.backends.cache
    }

    /// Where the cache is, for the start-up line; no secrets.
    pub fn cache_description(&self) -> String {
        self.cache().describe()
    }

    pub fn cache_status(&self) -> crate::cache::CacheBackendStatus {
        self.cache().status()
    }

    /// Every process's counters summed (Redis mode); `None` with the in-process cache
    /// or when Redis does not answer.
    pub async fn shared_counts(&self) -> Option<crate::metrics::Counts> {
        self.cache().redis_backend()?.shared_counts().await
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

    /// For tests that need a settled cache: does now what the next read would do about
    /// other processes' commits to a SQLite file.
    #[cfg(feature = "test-hooks")]
    pub async fn notice_other_writers(&self) {
        catch_up_with_other_writers(self).await;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("not found")]
    NotFound,
    #[error(transparent)]
    Invalid(#[from] ValidationErrors),
    #[error(transparent)]
    Db(DbError),
}

impl From<DbError> for ServiceError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Query(diesel::result::Error::NotFound) => ServiceError::NotFound,
            other => ServiceError::Db(other),
        }
    }
}

/// Redis mode, for `cache-metrics`: the server-wide keyspace numbers and the counters
/// every server process adds to, read from another process.
pub struct SharedCacheStats {
    redis: crate::cache::redis::RedisCache,
    target: String,
}

impl SharedCacheStats {
    pub fn new(
        url: &crate::config::RedisUrl,
        prefix: &crate::config::KeyPrefix,
    ) -> anyhow::Result<SharedCacheStats> {
        let keys = crate::cache::keys::KeySpace::new(&prefix.0);
        Ok(SharedCacheStats {
            redis: crate::cache::redis::RedisCache::new(url, keys, Default::default())?,
            target: url.target().to_owned(),
        })
    }

    pub async fn read(&self) -> anyhow::Result<crate::cache::redis::RedisStats> {
        self.redis.stats().await.map_err(|e| {
            anyhow::anyhow!(
                "cannot read metrics from Redis at {}: {}",
                self.target,
                crate::cause::root_cause(&e)
            )
        })
    }
}

/// Embedded mode: if another process committed to the SQLite file since the last
/// check, retire everything cached before this read can be served from the cache.
async fn catch_up_with_other_writers(app: &App) {
    let Some(watch) = &app.backends.sqlite_writes else {
        return;
    };
    // No lock: every request that finds the change retires the cache itself, and the
    // change counts as seen only once the cache is retired, so no request can read
    // the cache between a commit and its invalidation.
    if let Some(change) = watch.changed() {
        app.cache()
            .invalidate_everything(Cause {
                what: "change committed by another process",
                origin: Origin::OtherProcess,
            })
            .await;
        watch.acknowledge(change);
        tracing::debug!("cache invalidated: the database changed since the last request");
    }
}
