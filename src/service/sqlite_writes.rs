//! Embedded mode, server only: how this process learns what was committed to the SQLite
//! file (by another process: the CLI, a second server, the `sqlite3` shell; or by
//! itself), and retires exactly what that changed before it serves from the cache again.
//!
//! The commit watch says cheaply, before every cached read, whether anything was
//! committed; only then is the change log read (what followed the last entry acted on).
//! One request at a time reads it and the others wait for it; the change counts as seen
//! only once what it changed is retired, so no request reads the cache between a commit
//! and its invalidation.

use std::path::Path;

use crate::config::DbSettings;
use crate::logging::{Failure, log_limited};
use crate::metrics::events::Cause;
use crate::service::cache::Cache;
use crate::service::cache::tags::{TagSet, change_tags};
use crate::service::db::change_log::{ChangeLog, Followed};
use crate::service::db::data_version::CommitWatch;

pub(super) struct SqliteWrites {
    watch: CommitWatch,
    log: ChangeLog,
    /// The last change-log entry acted on; held while acting on the ones after it.
    seen: tokio::sync::Mutex<i64>,
}

impl SqliteWrites {
    /// Watches the file at `path` from its latest change-log entry on. What came before
    /// cannot be known (the server was down, or a writer could not reach Redis): the
    /// caller retires everything once.
    pub(super) async fn open(path: &Path, settings: &DbSettings) -> anyhow::Result<SqliteWrites> {
        let cannot = |e: &dyn std::fmt::Display| {
            anyhow::anyhow!(
                "cannot read the change log of SQLite file {}: {e}",
                path.display()
            )
        };
        let watch = CommitWatch::open(path)?;
        let name = path
            .to_str()
            .ok_or_else(|| cannot(&"the path is not valid UTF-8"))?;
        let log = ChangeLog::open(name, settings).map_err(|e| cannot(&e))?;
        let seen = log.last().await.map_err(|e| cannot(&e))?;
        Ok(SqliteWrites {
            watch,
            log,
            seen: tokio::sync::Mutex::new(seen),
        })
    }

    /// If anything was committed since the last look, retires what it changed, for
    /// `cause`; false when that could not reach the cache.
    pub(super) async fn catch_up(&self, cache: &Cache, cause: Cause<'_>) -> bool {
        if self.watch.changed().is_none() {
            return true;
        }
        let mut seen = self.seen.lock().await;
        // Another request may have acted on it while this one waited.
        let Some(change) = self.watch.changed() else {
            return true;
        };
        let invalidated = match self.log.after(*seen).await {
            Ok(Followed::Entries { changes, last }) => {
                *seen = last;
                if changes.is_empty() {
                    // A checkpoint, or a commit to other tables.
                    true
                } else {
                    let changed: TagSet = changes.iter().flat_map(change_tags).collect();
                    tracing::debug!(rows = changes.len(), "retiring what rows committed changed");
                    cache.invalidate(&changed, cause).await
                }
            }
            Ok(Followed::TooMuch { last }) => {
                *seen = last;
                tracing::debug!("retiring everything: too many rows committed since the last look");
                cache.invalidate_everything(cause).await
            }
            Err(e) => {
                log_limited!(
                    warn,
                    Failure::Database,
                    error = %e,
                    "cannot read what was committed to the SQLite file; retiring everything cached"
                );
                cache.invalidate_everything(cause).await
            }
        };
        self.watch.acknowledge(change);
        invalidated
    }
}
