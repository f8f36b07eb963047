//! The repository layer: one pool per backend behind one enum, and repository functions
//! that take a connection so services can compose them inside a transaction.
//!
//! diesel-async has no multi-backend async connection, so each repository body is
//! written once and expanded per backend by a macro (see `properties.rs`), and callers
//! reach the right expansion through [`with_connection!`](crate::with_connection).

pub mod data_version;
pub mod migrations;
pub mod models;
pub mod notify;
pub mod properties;
pub mod schema;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use diesel::connection::{Instrumentation, InstrumentationEvent};
use diesel::sqlite::SqliteConnection;
use diesel_async::pooled_connection::deadpool::{Object, Pool, PoolError};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;

use crate::config::DatabaseUrl;
use crate::metrics::Metrics;

pub type SqliteConn = SyncConnectionWrapper<SqliteConnection>;

/// How long a request waits for a pooled connection, or for a new one, before failing
/// with 503 instead of hanging.
const POOL_TIMEOUT: Duration = Duration::from_secs(5);

/// Set on every SQLite connection: without busy_timeout concurrent writers fail with
/// `database is locked`; WAL lets readers proceed during a write.
pub const SQLITE_PRAGMAS: &str = "PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;";

/// Set on every pooled PostgreSQL connection: the change trigger includes it in its
/// notification, so listeners can tell writes already invalidated in their own cache
/// (see `Cache::origin_tag`) from anyone else's.
fn pg_session(write_origin: &str) -> String {
    format!("SET listings.origin = '{write_origin}'")
}

#[derive(Clone)]
pub enum Db {
    Pg(Pool<AsyncPgConnection>),
    Sqlite(Pool<SqliteConn>),
}

/// A pooled connection of either backend; see [`with_connection!`](crate::with_connection).
#[allow(
    clippy::large_enum_variant,
    reason = "one short-lived value per request; boxing would allocate on every checkout"
)]
pub enum DbConn {
    Pg(Object<AsyncPgConnection>),
    Sqlite(Object<SqliteConn>),
}

/// Runs `$body` with `$conn` bound to the connection and `$repo` to that backend's
/// repository module (`$repo::properties::insert(…)`), so one body serves both.
#[macro_export]
macro_rules! with_connection {
    ($db_conn:expr, |$conn:ident, $repo:ident| $body:expr) => {
        match $db_conn {
            $crate::db::DbConn::Pg($conn) => {
                use $crate::db::pg as $repo;
                $body
            }
            $crate::db::DbConn::Sqlite($conn) => {
                use $crate::db::sqlite as $repo;
                $body
            }
        }
    };
}

/// Repository functions compiled against the PostgreSQL schema.
pub mod pg {
    crate::db::properties::property_repository!(
        diesel_async::AsyncPgConnection,
        diesel::pg::Pg,
        pg,
        crate::db::properties::bulk::pg_insert_batch
    );
}

/// Repository functions compiled against the SQLite schema.
pub mod sqlite {
    crate::db::properties::property_repository!(
        crate::db::SqliteConn,
        diesel::sqlite::Sqlite,
        sqlite,
        crate::db::properties::bulk::sqlite_insert_batch
    );
}

diesel::define_sql_function! {
    /// SQL `lower()`, for case-insensitive filters on both backends.
    fn lower(text: diesel::sql_types::Text) -> diesel::sql_types::Text;
}

/// Failures the HTTP layer maps to distinct statuses.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("the database is unavailable: {0}")]
    Unavailable(#[from] PoolError),
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
}

impl Db {
    /// Builds the pool. Connections are made lazily; call [`Db::check`] to fail fast.
    /// `write_origin` tags this process's PostgreSQL writes (`[a-z0-9-]` only).
    pub fn connect(
        url: &DatabaseUrl,
        metrics: Arc<Metrics>,
        max_connections: usize,
        write_origin: &str,
    ) -> anyhow::Result<Db> {
        match url {
            DatabaseUrl::Postgres(raw) => {
                let config = manager_config::<AsyncPgConnection>(metrics, pg_session(write_origin));
                let manager = AsyncDieselConnectionManager::new_with_config(raw, config);
                Ok(Db::Pg(build_pool(manager, max_connections)?))
            }
            DatabaseUrl::Sqlite(path) => {
                let config = manager_config::<SqliteConn>(metrics, SQLITE_PRAGMAS.to_owned());
                let path = path
                    .to_str()
                    .context("the SQLite path is not valid UTF-8")?;
                let manager = AsyncDieselConnectionManager::new_with_config(path, config);
                Ok(Db::Sqlite(build_pool(manager, max_connections)?))
            }
        }
    }

    pub async fn conn(&self) -> Result<DbConn, DbError> {
        Ok(match self {
            Db::Pg(pool) => DbConn::Pg(pool.get().await?),
            Db::Sqlite(pool) => DbConn::Sqlite(pool.get().await?),
        })
    }

    /// Takes one connection, so that an unreachable database is reported at start-up.
    pub async fn check(&self) -> Result<(), DbError> {
        self.conn().await.map(drop)
    }
}

/// Every pooled connection runs `init_sql` once and counts its statements. Recycling
/// is `Fast` (no test query), so the count is only the application's own statements.
fn manager_config<C>(metrics: Arc<Metrics>, init_sql: String) -> ManagerConfig<C>
where
    C: AsyncConnection + SimpleAsyncConnection + Prepare + 'static,
{
    let mut config = ManagerConfig::default();
    config.recycling_method = RecyclingMethod::Fast;
    config.custom_setup = Box::new(move |url| {
        let metrics = metrics.clone();
        let init_sql = init_sql.clone();
        async move {
            let mut conn = C::establish(url).await?;
            conn.batch_execute(&init_sql)
                .await
                .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
            conn.prepare()
                .await
                .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
            conn.set_instrumentation(QueryCounter(metrics));
            Ok(conn)
        }
        .boxed()
    });
    config
}

fn build_pool<C>(
    manager: AsyncDieselConnectionManager<C>,
    max_size: usize,
) -> anyhow::Result<Pool<C>>
where
    C: Send + 'static,
    AsyncDieselConnectionManager<C>: deadpool::managed::Manager<Type = C>,
{
    Pool::builder(manager)
        .max_size(max_size)
        .runtime(deadpool::Runtime::Tokio1)
        .wait_timeout(Some(POOL_TIMEOUT))
        .create_timeout(Some(POOL_TIMEOUT))
        .recycle_timeout(Some(POOL_TIMEOUT))
        .build()
        .context("cannot build the database pool")
}

/// Backend-specific set-up of each pooled connection, beyond its init SQL.
trait Prepare {
    fn prepare(&mut self) -> BoxFuture<'_, diesel::QueryResult<()>>;
}

impl Prepare for AsyncPgConnection {
    fn prepare(&mut self) -> BoxFuture<'_, diesel::QueryResult<()>> {
        async { Ok(()) }.boxed()
    }
}

impl Prepare for SqliteConn {
    /// SQLite's built-in `lower()` folds only ASCII; the filters lower-case with Rust's
    /// Unicode rules, so the column side must too (`Éldoret` matches `éldoret`).
    fn prepare(&mut self) -> BoxFuture<'_, diesel::QueryResult<()>> {
        self.spawn_blocking(|conn| {
            lower_utils::register_impl(conn, |text: String| text.to_lowercase())
        })
    }
}

/// Counts statements so tests and operators can see that a cache hit did no database work.
struct QueryCounter(Arc<Metrics>);

impl Instrumentation for QueryCounter {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        if let InstrumentationEvent::StartQuery { .. } = event {
            self.0.record_db_query();
        }
    }
}
