//! The only code that touches both the database and the cache: cache-aware reads, and
//! writes that commit, then invalidate. Handlers and commands call these, never the
//! repository or the cache directly, so every mutation path invalidates by construction.

pub mod change_listener;
pub mod properties;

use crate::app::App;
use crate::db::DbError;
use crate::domain::ValidationErrors;

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

/// Embedded mode: if another process committed to the SQLite file since the last
/// check, retire everything cached before this read can be served from the cache.
pub async fn catch_up_with_other_writers(app: &App) {
    let Some(probe) = &app.sqlite_writes else {
        return;
    };
    let mut probe = probe.lock().await;
    if probe.changed_since_last_check() {
        app.cache.invalidate_everything().await;
        tracing::debug!("cache invalidated: the database changed since the last request");
    }
}
