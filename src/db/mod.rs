//! The repository layer: one pool per backend behind [`Db`], whose methods (in
//! `properties.rs`) are the only way to the data. Each runs one repository body, written
//! once and expanded per backend, inside the limits of [`DbSettings`]:
//!
//! - a request waits at most `pool_timeout` for a connection and `statement_timeout`
//!   for its answers; a PostgreSQL connection that missed its deadline is discarded,
//!   never handed to the next request (it may still be waiting for a frozen server);
//! - a PostgreSQL write whose COMMIT was sent but not confirmed is not forgotten: its
//!   fate is learned later (`write_fate`) and, if it committed, every server is told.

pub mod connect;
pub mod data_version;
pub mod migrations;
pub mod models;
pub mod notify;
mod properties;
pub mod schema;
mod write_fate;

use std::sync::Arc;
use std::time::Duration;

use diesel::connection::{Instrumentation, InstrumentationEvent};
use diesel::sqlite::SqliteConnection;
use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{AsyncConnection, AsyncPgConnection};
use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;

pub use connect::DbSettings;

use crate::config::{DatabaseUrl, human_duration};
use crate::metrics::Metrics;
use crate::test_hooks::TestHooks;

pub type SqliteConn = SyncConnectionWrapper<SqliteConnection>;

/// Repository functions compiled against the PostgreSQL schema.
mod pg {
    crate::db::properties::property_repository!(
        diesel_async::AsyncPgConnection,
        diesel::pg::Pg,
        pg,
        crate::db::properties::bulk::pg_insert_batch
    );
}

/// Repository functions compiled against the SQLite schema.
mod sqlite {
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

/// Failures callers tell apart: the HTTP layer maps them to distinct statuses.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// No connection could be had: the server is down, refuses us, or the pool stayed
    /// exhausted. The message is the real cause, once.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// The database took longer than the statement timeout to answer.
    #[error("the database did not answer within {}", human_duration(*.0))]
    Timeout(Duration),
    /// A write's COMMIT was sent but its answer never came: it may or may not have
    /// been applied. If it was, servers are told as soon as the database answers.
    #[error(
        "the database did not confirm the write within {}; it may still be applied once the database answers",
        human_duration(*.0)
    )]
    OutcomeUnknown(Duration),
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
}

#[derive(Clone)]
pub struct Db {
    pool: Backend,
    settings: DbSettings,
    /// Tasks learning the fate of writes whose commit was not confirmed.
    unconfirmed: write_fate::Pending,
    hooks: Arc<TestHooks>,
}

#[derive(Clone)]
enum Backend {
    Pg {
        pool: Pool<AsyncPgConnection>,
        /// For the connections that learn the fate of unconfirmed writes.
        config: Arc<tokio_postgres::Config>,
    },
    Sqlite(Pool<SqliteConn>),
}

impl Db {
    /// Builds the pool. Connections are made lazily; call [`Db::check`] to fail fast.
    /// `write_origin` tags this process's PostgreSQL writes (`[a-z0-9-]` only).
    pub fn connect(
        url: &DatabaseUrl,
        settings: DbSettings,
        metrics: Arc<Metrics>,
        write_origin: &str,
        hooks: Arc<TestHooks>,
    ) -> Result<Db, DbError> {
        let unavailable = |e: &dyn std::fmt::Display| DbError::Unavailable(e.to_string());
        let pool = match url {
            DatabaseUrl::Postgres(raw) => {
                let config = connect::pg_config(
                    raw.expose(),
                    &settings,
                    connect::PgSession::Pooled { write_origin },
                )
                .map_err(|e| unavailable(&e))?;
                let config = Arc::new(config);
                let manager = AsyncDieselConnectionManager::new_with_config(
                    raw.expose(),
                    pg_manager_config(config.clone(), settings, metrics),
                );
                Backend::Pg {
                    pool: build_pool(manager, &settings).map_err(|e| unavailable(&e))?,
                    config,
                }
            }
            DatabaseUrl::Sqlite(path) => {
                let path = path
                    .to_str()
                    .ok_or_else(|| unavailable(&"the SQLite path is not valid UTF-8"))?;
                let manager = AsyncDieselConnectionManager::new_with_config(
                    path,
                    sqlite_manager_config(settings, metrics),
                );
                Backend::Sqlite(build_pool(manager, &settings).map_err(|e| unavailable(&e))?)
            }
        };
        Ok(Db {
            pool,
            settings,
            unconfirmed: Default::default(),
            hooks,
        })
    }

    pub fn settings(&self) -> &DbSettings {
        &self.settings
    }

    /// Takes one connection, so that an unreachable database is reported at start-up.
    pub async fn check(&self) -> Result<(), DbError> {
        match &self.pool {
            Backend::Pg { pool, .. } => checkout(pool, &self.settings).await.map(drop),
            Backend::Sqlite(pool) => checkout(pool, &self.settings).await.map(drop),
        }
    }
}

/// A pooled connection within the pool timeout (waiting and connecting together).
async fn checkout<C>(pool: &Pool<C>, settings: &DbSettings) -> Result<Object<C>, DbError>
where
    C: Send + 'static,
    AsyncDieselConnectionManager<C>:
        deadpool::managed::Manager<Type = C, Error = diesel_async::pooled_connection::PoolError>,
{
    use deadpool::managed::PoolError;
    use diesel_async::pooled_connection::PoolError as Backend;
    let waited = tokio::time::timeout(settings.pool_timeout, pool.get()).await;
    match waited {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(PoolError::Backend(Backend::ConnectionError(e)))) => {
            Err(DbError::Unavailable(connection_error_text(&e)))
        }
        Ok(Err(PoolError::Backend(Backend::QueryError(e)))) => {
            Err(DbError::Unavailable(crate::cause::root_cause(&e)))
        }
        Ok(Err(PoolError::Timeout(_))) | Err(_) => Err(DbError::Unavailable(format!(
            "no connection within {}",
            human_duration(settings.pool_timeout)
        ))),
        Ok(Err(other)) => Err(DbError::Unavailable(other.to_string())),
    }
}

/// diesel's messages, without its prefixes that repeat what the caller already says.
fn connection_error_text(e: &diesel::ConnectionError) -> String {
    use diesel::ConnectionError as E;
    match e {
        E::BadConnection(why) | E::InvalidConnectionUrl(why) => why.clone(),
        E::CouldntSetupConfiguration(query) => crate::cause::root_cause(query),
        other => other.to_string(),
    }
}

/// Runs `work` on `conn` within the statement timeout, restarted by every `heartbeat`
/// tick. A connection that missed its deadline is taken out of the pool and dropped: it
/// may still be waiting for a frozen server, and its next user would wait too.
macro_rules! within_deadline {
    ($db:expr, $conn:ident, $heartbeat:expr, $work:expr) => {{
        let limit = $db.settings.statement_timeout;
        let outcome = tokio::select! {
            done = $work => Some(done),
            () = $heartbeat.stalled(limit) => None,
        };
        match outcome {
            Some(done) => Ok(done),
            None => {
                drop(diesel_async::pooled_connection::deadpool::Object::take(
                    $conn,
                ));
                Err(limit)
            }
        }
    }};
}
pub(crate) use within_deadline;

/// Progress of one database operation: each tick restarts its deadline (an import
/// ticks after every batch; a single statement never ticks).
#[derive(Default)]
struct Heartbeat {
    last: std::sync::Mutex<Option<tokio::time::Instant>>,
}

impl Heartbeat {
    fn tick(&self) {
        *self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(tokio::time::Instant::now());
    }

    /// Resolves once `limit` has passed since the last tick (or since it was called).
    async fn stalled(&self, limit: Duration) {
        let start = tokio::time::Instant::now();
        loop {
            let last = self
                .last
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .unwrap_or(start);
            let deadline = last.max(start) + limit;
            if tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

fn pg_manager_config(
    config: Arc<tokio_postgres::Config>,
    settings: DbSettings,
    metrics: Arc<Metrics>,
) -> ManagerConfig<AsyncPgConnection> {
    let mut manager = ManagerConfig::default();
    // `Fast`: no test query on checkout, so the statement count is only the
    // application's own; a broken connection fails its query and is replaced.
    manager.recycling_method = RecyclingMethod::Fast;
    manager.custom_setup = Box::new(move |_url| {
        let config = config.clone();
        let metrics = metrics.clone();
        async move {
            let mut conn = connect::connect_pg(&config, settings.connect_timeout).await?;
            conn.set_instrumentation(QueryCounter(metrics));
            Ok(conn)
        }
        .boxed()
    });
    manager
}

fn sqlite_manager_config(settings: DbSettings, metrics: Arc<Metrics>) -> ManagerConfig<SqliteConn> {
    let mut manager = ManagerConfig::default();
    manager.recycling_method = RecyclingMethod::Fast;
    manager.custom_setup = Box::new(move |url| {
        let metrics = metrics.clone();
        let url = url.to_owned();
        async move {
            let mut conn = SqliteConn::establish(&url).await?;
            conn.spawn_blocking(move |conn| connect::configure_sqlite(conn, &settings))
                .await
                .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
            register_unicode_lower(&mut conn)
                .await
                .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
            conn.set_instrumentation(QueryCounter(metrics));
            Ok(conn)
        }
        .boxed()
    });
    manager
}

/// SQLite's built-in `lower()` folds only ASCII; the filters lower-case with Rust's
/// Unicode rules, so the column side must too (`Éldoret` matches `éldoret`).
fn register_unicode_lower(conn: &mut SqliteConn) -> BoxFuture<'_, diesel::QueryResult<()>> {
    conn.spawn_blocking(|conn| lower_utils::register_impl(conn, |text: String| text.to_lowercase()))
}

fn build_pool<C>(
    manager: AsyncDieselConnectionManager<C>,
    settings: &DbSettings,
) -> Result<Pool<C>, deadpool::managed::BuildError>
where
    C: Send + 'static,
    AsyncDieselConnectionManager<C>: deadpool::managed::Manager<Type = C>,
{
    Pool::builder(manager)
        .max_size(settings.max_connections)
        .runtime(deadpool::Runtime::Tokio1)
        .wait_timeout(Some(settings.pool_timeout))
        .create_timeout(Some(settings.connect_timeout))
        .recycle_timeout(Some(settings.pool_timeout))
        .build()
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
