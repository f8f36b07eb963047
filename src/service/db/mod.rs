//! The repository layer: pools for reads and for writes behind [`Db`], the repository
//! functions (`properties.rs`, expanded per backend), and `dispatch!`, the only way the
//! services run them: a body written once, in the transaction the service chose,
//! inside the limits of [`DbSettings`]:
//!
//! - a request waits at most `pool_timeout` for a connection and `statement_timeout`
//!   for its answers; a PostgreSQL connection that missed its deadline is discarded,
//!   never handed to the next request (it may still be waiting for a frozen server);
//! - a PostgreSQL write whose COMMIT was sent but not confirmed is not forgotten: its
//!   fate is learned later (`write_fate`) and, if it committed, every server is told.

pub mod change_log;
pub mod connect;
pub mod data_version;
pub(super) mod dispatch;
pub mod migrations;
pub mod notify;
pub mod page_statement;
mod page_windows;
mod properties;
pub(super) mod replicas;
pub(super) mod row_update;
pub mod schema;
mod text_keys;
mod tls_connect;
pub(super) mod write_fate;

use std::sync::Arc;
use std::time::Duration;

use diesel::connection::{Instrumentation, InstrumentationEvent};
use diesel::sqlite::SqliteConnection;
use diesel_async::pooled_connection::deadpool::Pool;
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{AsyncConnection, AsyncPgConnection};
use futures_util::FutureExt as _;

use crate::config::DbSettings;

use crate::config::{DatabaseUrl, human_duration};
use crate::metrics::Metrics;
use crate::service::wal::{ReadFloor, WalPosition};
#[cfg(feature = "test-hooks")]
use crate::test_hooks::TestHooks;

pub type SqliteConn = SyncConnectionWrapper<SqliteConnection>;

/// Repository functions compiled against the PostgreSQL schema.
pub(super) mod pg {
    crate::service::db::properties::property_repository!(
        diesel_async::AsyncPgConnection,
        diesel::pg::Pg,
        pg,
        crate::service::db::properties::bulk::pg_insert_batch,
        crate::service::db::row_update::pg_update,
        crate::service::db::write_fate::pg_transaction_id,
        crate::service::db::connect::pg_plan_for_values
    );
}

/// Repository functions compiled against the SQLite schema.
pub(super) mod sqlite {
    crate::service::db::properties::property_repository!(
        crate::service::db::SqliteConn,
        diesel::sqlite::Sqlite,
        sqlite,
        crate::service::db::properties::bulk::sqlite_insert_batch,
        crate::service::db::row_update::sqlite_update,
        crate::service::db::write_fate::no_transaction_id,
        crate::service::db::connect::sqlite_plan_for_values
    );
}

diesel::define_sql_function! {
    /// SQL `lower()`: on SQLite connections of the application, the domain's match key
    /// (see `connect::configure_sqlite`), for the keys its triggers and migrations set.
    fn lower(text: diesel::sql_types::Text) -> diesel::sql_types::Text;
}

/// How a new connection to `url` travels (see [`Db::transport`]), for commands that
/// have no pool: `cache-metrics`. The error says why no connection could be made.
pub async fn probe_transport(url: &DatabaseUrl, settings: &DbSettings) -> Result<String, String> {
    let DatabaseUrl::Postgres(raw) = url else {
        return Ok("a local file".to_owned());
    };
    let config = connect::pg_config(raw.expose(), settings, connect::PgSession::Maintenance)
        .map_err(|e| e.to_string())?;
    let mut conn = connect::connect_pg(&config, settings.connect_timeout)
        .await
        .map_err(|e| e.to_string())?;
    connect::describe_session(&mut conn, config.ssl_mode())
        .await
        .map_err(|e| e.to_string())
}

/// Every replica's standing as one round of checks finds it, for commands that have
/// no server's history (`cache-metrics`): the lag in bytes, not in time.
pub async fn probe_replicas(
    url: &DatabaseUrl,
    settings: &DbSettings,
    replicas: &crate::config::ReplicaSettings,
) -> Result<Vec<(String, crate::metrics::replicas::ReplicaState)>, String> {
    let DatabaseUrl::Postgres(raw) = url else {
        return Err("replicas need DATABASE_URL to be PostgreSQL".to_owned());
    };
    let metrics = Arc::new(Metrics::default());
    let primary = connect::pg_config(raw.expose(), settings, connect::PgSession::Maintenance)
        .map_err(|e| connection_error_text(&e))?;
    let checks = replicas::Replicas::new(
        replicas,
        *settings,
        Arc::new(primary),
        "cache-metrics",
        metrics.clone(),
    )
    .map_err(|e| e.to_string())?;
    checks.check_now().await;
    Ok(metrics
        .reads
        .replicas()
        .iter()
        .map(|replica| (replica.name.clone(), replica.state()))
        .collect())
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
    /// A conditional write found the row not as its precondition requires; its
    /// transaction was rolled back.
    #[error("the precondition of the write is false")]
    PreconditionFailed,
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
}

/// How a caller should take a [`DbError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The row asked for does not exist.
    NotFound,
    /// A conditional write's precondition is false.
    PreconditionFailed,
    /// The database cannot serve now (down, too slow, still locked): retry later.
    Unavailable,
    /// A write's COMMIT was sent but not confirmed: it may still be applied.
    OutcomeUnknown,
    /// The database refused a statement: a fault of this program, not of the request.
    Failed,
}

impl DbError {
    pub fn fault(&self) -> Fault {
        use diesel::result::{DatabaseErrorKind, Error};
        match self {
            DbError::Unavailable(_) | DbError::Timeout(_) => Fault::Unavailable,
            DbError::OutcomeUnknown(_) => Fault::OutcomeUnknown,
            DbError::PreconditionFailed => Fault::PreconditionFailed,
            DbError::Query(Error::NotFound) => Fault::NotFound,
            // A dropped connection, or SQLite still locked after its busy timeout.
            DbError::Query(
                Error::DatabaseError(DatabaseErrorKind::ClosedConnection, _)
                | Error::BrokenTransactionManager,
            ) => Fault::Unavailable,
            DbError::Query(Error::DatabaseError(_, info))
                if info.message().contains("database is locked") =>
            {
                Fault::Unavailable
            }
            DbError::Query(_) => Fault::Failed,
        }
    }
}

#[derive(Clone)]
pub struct Db {
    pub(super) pools: Pools,
    pub(super) settings: DbSettings,
    /// Tasks learning the fate of writes whose commit was not confirmed.
    unconfirmed: write_fate::Pending,
    /// Replicas are in use (perhaps by other processes): every write's WAL position is
    /// wanted, to raise their watermark.
    write_positions: bool,
    /// What [`Db::transport`] learned, once: it does not change while the process runs.
    transport: Arc<std::sync::OnceLock<String>>,
    /// `pub(crate)` for `dispatch!`, which expands where its callers are.
    pub(crate) metrics: Arc<Metrics>,
    #[cfg(feature = "test-hooks")]
    pub(super) hooks: Arc<TestHooks>,
}

#[derive(Clone)]
pub(super) enum Pools {
    Pg {
        pool: Pool<AsyncPgConnection>,
        /// The service's writes take connections of their own, so they never queue
        /// behind the misses of a busy server for one; so does reading the WAL position
        /// after a commit (a write's, or another process's notified one) for replicas.
        writes: Pool<AsyncPgConnection>,
        /// For the connections that learn the fate of unconfirmed writes.
        config: Arc<connect::PgConfig>,
        /// For `settle_after_bulk_load`, which no statement timeout may cut short.
        maintenance: Arc<connect::PgConfig>,
        /// Streaming replicas that may serve reads (see `replicas`).
        replicas: Option<Arc<replicas::Replicas>>,
    },
    /// SQLite takes one writer at a time, so writers get a connection of their own
    /// and queue for it, rather than hold read connections while they wait for the
    /// file's write lock: reads never wait behind writes.
    Sqlite {
        read: Pool<SqliteConn>,
        write: Pool<SqliteConn>,
    },
}

impl Db {
    /// Builds the pools. Connections are made lazily; call [`Db::check`] to fail fast.
    /// `write_origin` tags this process's PostgreSQL writes (`[a-z0-9-]` only).
    pub fn connect(
        url: &DatabaseUrl,
        settings: DbSettings,
        replica_settings: &crate::config::ReplicaSettings,
        read_from_replicas: bool,
        metrics: Arc<Metrics>,
        write_origin: &str,
    ) -> Result<Db, DbError> {
        let unavailable = |e: &dyn std::fmt::Display| DbError::Unavailable(e.to_string());
        let pools = match url {
            DatabaseUrl::Postgres(raw) => {
                let config = connect::pg_config(
                    raw.expose(),
                    &settings,
                    connect::PgSession::Pooled { write_origin },
                )
                .map_err(|e| unavailable(&e))?;
                let config = Arc::new(config);
                let maintenance =
                    connect::pg_config(raw.expose(), &settings, connect::PgSession::Maintenance)
                        .map_err(|e| unavailable(&e))?;
                let pool = |size| {
                    let manager = AsyncDieselConnectionManager::new_with_config(
                        raw.expose(),
                        pg_manager_config(config.clone(), settings, metrics.clone()),
                    );
                    build_pool(manager, &settings, size).map_err(|e| unavailable(&e))
                };
                let replicas = if replica_settings.urls.is_empty() || !read_from_replicas {
                    None
                } else {
                    Some(Arc::new(replicas::Replicas::new(
                        replica_settings,
                        settings,
                        config.clone(),
                        write_origin,
                        metrics.clone(),
                    )?))
                };
                Pools::Pg {
                    pool: pool(settings.max_connections)?,
                    writes: pool(PG_WRITE_CONNECTIONS)?,
                    config,
                    maintenance: Arc::new(maintenance),
                    replicas,
                }
            }
            DatabaseUrl::Sqlite(path) => {
                let path = path
                    .to_str()
                    .ok_or_else(|| unavailable(&"the SQLite path is not valid UTF-8"))?;
                let pool = |role, size| {
                    let manager = AsyncDieselConnectionManager::new_with_config(
                        path,
                        sqlite_manager_config(settings, metrics.clone(), role),
                    );
                    build_pool(manager, &settings, size).map_err(|e| unavailable(&e))
                };
                Pools::Sqlite {
                    read: pool(SqliteRole::Read, settings.max_connections)?,
                    write: pool(SqliteRole::Write, SQLITE_WRITE_CONNECTIONS)?,
                }
            }
        };
        Ok(Db {
            pools,
            settings,
            write_positions: !replica_settings.urls.is_empty(),
            unconfirmed: Default::default(),
            transport: Default::default(),
            metrics,
            #[cfg(feature = "test-hooks")]
            hooks: Arc::default(),
        })
    }

    /// Shares the cache's pause points (race tests).
    #[cfg(feature = "test-hooks")]
    pub fn with_hooks(self, hooks: Arc<TestHooks>) -> Db {
        Db { hooks, ..self }
    }

    fn replicas(&self) -> Option<&Arc<replicas::Replicas>> {
        match &self.pools {
            Pools::Pg { replicas, .. } => replicas.as_ref(),
            Pools::Sqlite { .. } => None,
        }
    }

    /// Whether this process reads from replicas (a server given some).
    pub fn reads_replicas(&self) -> bool {
        self.replicas().is_some()
    }

    /// Where a read that needs `floor` goes (see `replicas`).
    pub(in crate::service) fn route_read(&self, floor: ReadFloor) -> replicas::Route<'_> {
        match self.replicas() {
            Some(replicas) => replicas.route(floor),
            None => replicas::Route::Primary(None),
        }
    }

    pub(in crate::service) fn record_primary_read(
        &self,
        fallback: Option<crate::metrics::replicas::Fallback>,
    ) {
        self.metrics.reads.record_primary_read(fallback);
    }

    /// One round of replica checks (see `Replicas::check`): the primary's position,
    /// read after the call began; `None` without replicas or when it cannot be read.
    pub async fn check_replicas(&self) -> Option<WalPosition> {
        self.replicas()?.check().await
    }

    /// [`Db::check_replicas`], waiting for every replica's check.
    pub async fn check_replicas_now(&self) -> Option<WalPosition> {
        self.replicas()?.check_now().await
    }

    /// For the replicas' watermark, when replicas are configured (servers read from
    /// them): the primary's current WAL position, at or past every commit made before
    /// the call (a write's, when called after its commit); `None` without replicas, or
    /// if it cannot be read. The insert position, not the write position: a COMMIT
    /// under `synchronous_commit = off` returns before its record is written.
    pub async fn position_for_watermark(&self) -> Option<WalPosition> {
        #[derive(diesel::QueryableByName)]
        struct Position {
            #[diesel(sql_type = diesel::sql_types::Text)]
            position: String,
        }
        let Pools::Pg { writes: pool, .. } = &self.pools else {
            return None;
        };
        if !self.write_positions {
            return None;
        }
        let db = self;
        let read = async {
            dispatch::dispatch!(@pg_read db, pool, |conn| {
                diesel_async::RunQueryDsl::get_result::<Position>(
                    diesel::sql_query("SELECT pg_current_wal_insert_lsn()::text AS position"),
                    conn,
                )
                .await
            })
        };
        let read: Result<Position, DbError> = read.await;
        match read {
            Ok(read) => WalPosition::parse_pg(&read.position),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the WAL position of a write; replicas wait until it is known again");
                None
            }
        }
    }

    /// A page of `query`, its count and the versions of its count nodes in one
    /// statement (see `page_statement`); `None` for a search by text.
    pub(super) async fn page_at_once(
        &self,
        query: &crate::domain::PropertyQuery,
        known: Option<std::sync::Arc<crate::service::count_memo::KnownCount>>,
        floor: ReadFloor,
    ) -> Result<
        Option<(
            crate::domain::PropertyPage,
            Option<crate::service::count_memo::KnownCount>,
        )>,
        DbError,
    > {
        if page_statement::count_nodes(query).is_none() {
            return Ok(None);
        }
        crate::test_hooks::pause!(self.hooks, BetweenRowsAndCount);
        let db = self;
        match &self.pools {
            Pools::Pg { pool, .. } => dispatch::dispatch!(@pg_read_at db, pool, floor, |conn| {
                let began = std::time::Instant::now();
                let read = page_statement::pg_page_with_count(conn, query, known.as_deref()).await;
                self.metrics.record_page_read(began.elapsed());
                read
            }),
            Pools::Sqlite { read, .. } => {
                let query = query.clone();
                let metrics = self.metrics.clone();
                dispatch::dispatch!(@sqlite_read db, read, |conn| {
                    let began = std::time::Instant::now();
                    let read = page_statement::sqlite_page_with_count(conn, &query, known.as_deref()).await;
                    metrics.record_page_read(began.elapsed());
                    read
                })
            }
        }
    }

    /// Tells every listening server that `table` changed, with an origin none of them
    /// skips. Nothing to do on SQLite, where servers notice every commit themselves.
    pub async fn announce_unconfirmed_change(&self, table: &str) -> Result<(), DbError> {
        match &self.pools {
            Pools::Pg { pool, .. } => {
                let db = self;
                dispatch::dispatch!(@pg_read db, pool, |conn| {
                    crate::service::db::notify::announce_change(conn, table).await
                })
            }
            Pools::Sqlite { .. } => Ok(()),
        }
    }

    /// How this process's connections to the database travel, for operators:
    /// `encrypted (TLSv1.3, sslmode=verify-full)`, `not encrypted (sslmode=prefer)`,
    /// or `a local file`. Asked of a pooled connection the first time (the start-up
    /// line's), so that the dashboard's polls cost no query; `None` while none answers.
    pub async fn transport(&self) -> Option<String> {
        if let Some(known) = self.transport.get() {
            return Some(known.clone());
        }
        let Pools::Pg { pool, config, .. } = &self.pools else {
            return Some("a local file".to_owned());
        };
        let mut conn = checkout(pool, &self.settings).await.ok()?;
        let described = connect::describe_session(&mut conn, config.ssl_mode())
            .await
            .ok()?;
        conn.finish();
        Some(self.transport.get_or_init(|| described).clone())
    }

    /// The value of the PostgreSQL setting `name` on a connection of the pool; `None`
    /// on SQLite or when it cannot be read.
    #[cfg(feature = "test-hooks")]
    pub async fn pooled_setting(&self, name: &str) -> Option<String> {
        let Pools::Pg { pool, .. } = &self.pools else {
            return None;
        };
        let mut conn = checkout(pool, &self.settings).await.ok()?;
        let value = connect::setting(&mut conn, name).await.ok()?;
        conn.finish();
        Some(value)
    }

    /// After a bulk load (an import, `seed`), on PostgreSQL: `VACUUM (ANALYZE)` the
    /// table, so that the planner knows its new size and the pages are marked
    /// all-visible. Until then every row a count or a filtered page touches is also
    /// fetched from the table (5 to 10 times slower: 4.2 ms instead of 0.5 for the count
    /// of one location at 100,000 listings), until autovacuum gets to it, a minute or
    /// more later. On a connection of its own without the statement timeout: it takes as
    /// long as the table needs. SQLite's covering indexes need neither; false there.
    pub async fn settle_after_bulk_load(&self) -> Result<bool, DbError> {
        use diesel_async::SimpleAsyncConnection as _;
        let Pools::Pg { maintenance, .. } = &self.pools else {
            return Ok(false);
        };
        let mut conn = connect::connect_pg(maintenance, self.settings.connect_timeout)
            .await
            .map_err(|e| DbError::Unavailable(connection_error_text(&e)))?;
        // Two calls: VACUUM cannot run in the transaction a multi-statement string is.
        conn.batch_execute("SET statement_timeout = 0").await?;
        // The counting tables too: the import's triggers updated their rows once per
        // listing, and every count would step over the dead versions until autovacuum.
        conn.batch_execute("VACUUM (ANALYZE) properties, listing_counts, listing_versions")
            .await?;
        Ok(true)
    }

    /// Takes one connection, so that an unreachable database is reported at start-up.
    pub async fn check(&self) -> Result<(), DbError> {
        match &self.pools {
            Pools::Pg { pool, .. } => checkout(pool, &self.settings).await.map(Checkout::finish),
            Pools::Sqlite { read, write } => {
                checkout(read, &self.settings).await.map(Checkout::finish)?;
                checkout(write, &self.settings).await.map(Checkout::finish)
            }
        }
    }
}

/// A write's connection, as [`checkout`]; the wait is the write's first phase in the
/// metrics, timed whether or not a connection came.
pub(super) async fn checkout_for_write<C>(
    pool: &Pool<C>,
    settings: &DbSettings,
    metrics: &Metrics,
) -> Result<Checkout<AsyncDieselConnectionManager<C>>, DbError>
where
    C: Send + 'static,
    AsyncDieselConnectionManager<C>:
        deadpool::managed::Manager<Type = C, Error = diesel_async::pooled_connection::PoolError>,
{
    let asked = std::time::Instant::now();
    let checked_out = checkout(pool, settings).await;
    metrics.record_write_phase(crate::metrics::WritePhase::Connection, asked.elapsed());
    checked_out
}

/// A pooled connection within the pool timeout (waiting and connecting together).
pub(super) async fn checkout<C>(
    pool: &Pool<C>,
    settings: &DbSettings,
) -> Result<Checkout<AsyncDieselConnectionManager<C>>, DbError>
where
    C: Send + 'static,
    AsyncDieselConnectionManager<C>:
        deadpool::managed::Manager<Type = C, Error = diesel_async::pooled_connection::PoolError>,
{
    use deadpool::managed::PoolError;
    use diesel_async::pooled_connection::PoolError as ManagerError;
    let waited = tokio::time::timeout(settings.pool_timeout, pool.get()).await;
    match waited {
        Ok(Ok(conn)) => Ok(Checkout(Some(conn))),
        Ok(Err(PoolError::Backend(ManagerError::ConnectionError(e)))) => {
            Err(DbError::Unavailable(connection_error_text(&e)))
        }
        Ok(Err(PoolError::Backend(ManagerError::QueryError(e)))) => {
            Err(DbError::Unavailable(crate::error_chain::root_cause(&e)))
        }
        Ok(Err(PoolError::Timeout(_))) | Err(_) => Err(DbError::Unavailable(format!(
            "no connection within {}",
            human_duration(settings.pool_timeout)
        ))),
        Ok(Err(other)) => Err(DbError::Unavailable(other.to_string())),
    }
}

/// A pooled connection that goes back to the pool only when the operation using it
/// ran to its end ([`Checkout::finish`]). One cancelled midway (its request dropped, its
/// deadline passed, a panic) may have left a transaction open or, on SQLite, a
/// statement still running on a blocking thread, whose connection panics on its next
/// use: such a connection is dropped instead, and the pool makes a new one.
pub(crate) struct Checkout<M: deadpool::managed::Manager>(Option<deadpool::managed::Object<M>>);

impl<M: deadpool::managed::Manager> Checkout<M> {
    /// The operation is over and left the connection as it found it.
    pub(crate) fn finish(mut self) {
        drop(self.0.take());
    }
}

impl<M: deadpool::managed::Manager> Drop for Checkout<M> {
    fn drop(&mut self) {
        if let Some(unfinished) = self.0.take() {
            drop(deadpool::managed::Object::take(unfinished));
        }
    }
}

impl<M: deadpool::managed::Manager> std::ops::Deref for Checkout<M> {
    type Target = M::Type;
    fn deref(&self) -> &M::Type {
        self.0
            .as_deref()
            .unwrap_or_else(|| unreachable!("a checkout holds its connection until dropped"))
    }
}

impl<M: deadpool::managed::Manager> std::ops::DerefMut for Checkout<M> {
    fn deref_mut(&mut self) -> &mut M::Type {
        self.0
            .as_deref_mut()
            .unwrap_or_else(|| unreachable!("a checkout holds its connection until dropped"))
    }
}

/// Test builds: stops a SQLite read on its blocking thread, inside the statement
/// SQLite is running for it, at `Point::InsideSqliteCall` when a test armed it.
#[cfg(feature = "test-hooks")]
pub(super) async fn pause_inside_sqlite(
    conn: &mut SqliteConn,
    hooks: &Arc<TestHooks>,
) -> diesel::QueryResult<()> {
    if !hooks.is_armed(crate::test_hooks::Point::InsideSqliteCall) {
        return Ok(());
    }
    let hooks = hooks.clone();
    let runtime = tokio::runtime::Handle::current();
    conn.spawn_blocking(move |_| {
        runtime.block_on(hooks.pause(crate::test_hooks::Point::InsideSqliteCall));
        Ok(())
    })
    .await
}

/// diesel's messages, without its prefixes that repeat what the caller already says.
fn connection_error_text(e: &diesel::ConnectionError) -> String {
    use diesel::ConnectionError as E;
    match e {
        E::BadConnection(why) | E::InvalidConnectionUrl(why) => why.clone(),
        E::CouldntSetupConfiguration(query) => crate::error_chain::root_cause(query),
        other => other.to_string(),
    }
}

/// Progress of one database operation: each tick restarts its deadline (an import
/// ticks after every batch; a single statement never ticks).
#[derive(Default)]
pub(super) struct Heartbeat {
    last: std::sync::Mutex<Option<tokio::time::Instant>>,
}

impl Heartbeat {
    pub(super) fn tick(&self) {
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
    config: Arc<connect::PgConfig>,
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

/// What a pooled SQLite connection is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SqliteRole {
    /// Reads only (`query_only`), so a bug cannot write behind the write pool's back.
    Read,
    Write,
}

/// Connections per process for the service's writes to PostgreSQL (beside the pool's),
/// opened when first needed. A write holds one for its transaction (13 ms at the median
/// on two cores saturated by bench/mix's reads): two made writes at 50/s wait for a
/// connection at the 99th percentile; four take about 300 writes a second even there.
const PG_WRITE_CONNECTIONS: usize = 4;

/// Connections per process that write to a SQLite file. SQLite lets one writer in at a
/// time anyway; one connection makes writers queue in the pool (bounded by the pool
/// timeout) instead of in SQLite's busy handler.
const SQLITE_WRITE_CONNECTIONS: usize = 1;

fn sqlite_manager_config(
    settings: DbSettings,
    metrics: Arc<Metrics>,
    role: SqliteRole,
) -> ManagerConfig<SqliteConn> {
    let mut manager = ManagerConfig::default();
    manager.recycling_method = RecyclingMethod::Fast;
    manager.custom_setup = Box::new(move |url| {
        let metrics = metrics.clone();
        let url = url.to_owned();
        async move {
            // Opened on a blocking thread of tokio's own, not through the wrapper: the
            // pool gives up on a slow connect by dropping this future, and dropping the
            // wrapper's blocking call would block (or, on one thread, panic).
            let opened = tokio::task::spawn_blocking(move || {
                let mut conn = connect::open_sqlite(&url, &settings)?;
                if role == SqliteRole::Read {
                    diesel::connection::SimpleConnection::batch_execute(
                        &mut conn,
                        "PRAGMA query_only = ON;",
                    )
                    .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
                }
                Ok::<_, diesel::ConnectionError>(conn)
            })
            .await
            .map_err(|e| diesel::ConnectionError::BadConnection(e.to_string()))??;
            let mut conn = SqliteConn::new(opened);
            conn.set_instrumentation(QueryCounter(metrics));
            Ok(conn)
        }
        .boxed()
    });
    manager
}

fn build_pool<C>(
    manager: AsyncDieselConnectionManager<C>,
    settings: &DbSettings,
    size: usize,
) -> Result<Pool<C>, deadpool::managed::BuildError>
where
    C: Send + 'static,
    AsyncDieselConnectionManager<C>: deadpool::managed::Manager<Type = C>,
{
    Pool::builder(manager)
        .max_size(size)
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
