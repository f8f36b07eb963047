//! `dispatch!`: the one way a statement reaches the database. Its body is written once
//! and expanded per backend, with `$repo` naming that backend's repository, and every
//! run is bounded by the statement deadline on both backends:
//!
//! - `read at floor`: one connection, no transaction of its own;
//! - `snapshot at floor`: a read-only transaction whose statements see one snapshot
//!   (PostgreSQL: REPEATABLE READ; SQLite: one read transaction);
//!
//!   both on PostgreSQL on a replica that has replayed up to `floor`, if one may serve
//!   (see `replicas`), otherwise on the primary;
//! - `write`: a transaction that commits only if the caller still waits for it. A
//!   statement of its body may return the transaction's id and put it in `$xid`;
//!   otherwise it is asked for after the body, before COMMIT.
//!
//! PostgreSQL: a connection that missed its deadline is dropped, never pooled again (it
//! may still be waiting for a frozen server). A write that missed it after its COMMIT
//! was sent is `OutcomeUnknown`, and `write_fate` learns later what happened and tells
//! every server.
//!
//! SQLite: a write transaction takes the file's write lock when it begins (`BEGIN
//! IMMEDIATE`), so that what it reads before it writes (the row it is about to change)
//! is what its write replaces. diesel-async's wrapper cannot be stopped midway (dropping its future blocks
//! the thread until SQLite's statement is done, and panics on a one-thread runtime), so
//! the body runs in a task of its own that finishes by itself; `$body` owns what it
//! uses. A write whose caller gave up before its COMMIT rolls back (see `CommitGate`);
//! one whose COMMIT had begun is `OutcomeUnknown`, and if it commits, every server's
//! commit watch retires its cache before serving it again.

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use crate::config::DbSettings;
use crate::service::db::{DbError, Heartbeat, SqliteConn};

macro_rules! dispatch {
    ($db:expr, read at $floor:expr, move |$conn:ident, $repo:ident| $body:expr) => {{
        let db: &crate::service::db::Db = $db;
        match &db.pools {
            crate::service::db::Pools::Pg { pool, .. } => {
                use crate::service::db::pg::properties as $repo;
                crate::service::db::dispatch::dispatch!(@pg_read_at db, pool, $floor, |$conn| $body)
            }
            crate::service::db::Pools::Sqlite { read, .. } => {
                use crate::service::db::sqlite::properties as $repo;
                crate::service::db::dispatch::dispatch!(@sqlite_read db, read, |$conn| $body)
            }
        }
    }};
    ($db:expr, snapshot at $floor:expr, move |$tx:ident, $repo:ident| $body:expr) => {{
        use diesel_async::AsyncConnection as _;
        let db: &crate::service::db::Db = $db;
        match &db.pools {
            crate::service::db::Pools::Pg { pool, .. } => {
                use crate::service::db::pg::properties as $repo;
                crate::service::db::dispatch::dispatch!(@pg_read_at db, pool, $floor, |conn| {
                    conn.build_transaction()
                        .read_only()
                        .repeatable_read()
                        .run(async |$tx| -> diesel::QueryResult<_> { $body })
                        .await
                })
            }
            crate::service::db::Pools::Sqlite { read, .. } => {
                use crate::service::db::sqlite::properties as $repo;
                #[cfg(feature = "test-hooks")]
                let hooks = db.hooks.clone();
                crate::service::db::dispatch::dispatch!(@sqlite_read db, read, |conn| {
                    conn.transaction(async |$tx| -> diesel::QueryResult<_> {
                        #[cfg(feature = "test-hooks")]
                        crate::service::db::pause_inside_sqlite($tx, &hooks).await?;
                        $body
                    })
                    .await
                })
            }
        }
    }};
    ($db:expr, write, $error:ty, move |$tx:ident, $repo:ident, $heartbeat:ident, $xid:ident| $body:expr) => {{
        use diesel_async::AsyncConnection as _;
        let db: &crate::service::db::Db = $db;
        match &db.pools {
            crate::service::db::Pools::Pg { writes, config, .. } => {
                use crate::service::db::pg::properties as $repo;
                use crate::metrics::WritePhase;
                let mut conn =
                    crate::service::db::checkout_for_write(writes, &db.settings, &db.metrics).await?;
                let began = std::time::Instant::now();
                let $heartbeat = crate::service::db::Heartbeat::default();
                let committing = std::sync::OnceLock::<String>::new();
                let work = conn.transaction::<_, $error, _>(async |$tx| {
                    let returned = crate::service::db::write_fate::ReturnedXid::default();
                    let value = {
                        let $xid = &returned;
                        $body?
                    };
                    // Known before COMMIT is sent: a COMMIT without an answer is then
                    // one whose fate can be learned.
                    let xid = match returned.take() {
                        Some(xid) => xid,
                        None => crate::service::db::write_fate::current_transaction($tx).await?,
                    };
                    let _ = committing.set(xid);
                    crate::test_hooks::pause!(db.hooks, BeforeCommit);
                    Ok(value)
                });
                let limit = db.settings.statement_timeout;
                let finished = crate::service::db::dispatch::within_deadline(limit, &$heartbeat, work).await;
                db.metrics.record_write_phase(WritePhase::Transaction, began.elapsed());
                match finished {
                    Some(done) => {
                        conn.finish();
                        done
                    }
                    None => {
                        drop(conn);
                        Err(match committing.into_inner() {
                            Some(xid) => {
                                db.learn_fate_later(config, xid);
                                crate::service::db::DbError::OutcomeUnknown(limit).into()
                            }
                            None => crate::service::db::DbError::Timeout(limit).into(),
                        })
                    }
                }
            }
            crate::service::db::Pools::Sqlite { write, .. } => {
                use crate::service::db::sqlite::properties as $repo;
                let pool = write.clone();
                let settings = db.settings;
                let gate = std::sync::Arc::new(crate::service::db::dispatch::CommitGate::default());
                let heartbeat = std::sync::Arc::new(crate::service::db::Heartbeat::default());
                #[cfg(feature = "test-hooks")]
                let hooks = db.hooks.clone();
                let metrics = db.metrics.clone();
                let task = tokio::spawn(tracing::Instrument::in_current_span({
                    let gate = gate.clone();
                    let $heartbeat = heartbeat.clone();
                    async move {
                        use crate::metrics::WritePhase;
                        let mut conn =
                            crate::service::db::checkout_for_write(&pool, &settings, &metrics).await?;
                        let began = std::time::Instant::now();
                        let done = crate::service::db::dispatch::immediate_transaction::<_, $error, _>(
                            &mut conn,
                            async |$tx| {
                                #[cfg(feature = "test-hooks")]
                                crate::test_hooks::pause!(hooks, InsideSqliteWrite);
                                // SQLite's writes have no id to learn a fate by.
                                let $xid = &crate::service::db::write_fate::ReturnedXid::default();
                                let value = $body?;
                                if !gate.begin_commit() {
                                    // Its caller gave up: nobody will be told of it.
                                    return Err(crate::service::db::DbError::Timeout(
                                        settings.statement_timeout,
                                    )
                                    .into());
                                }
                                Ok(value)
                            },
                        )
                        .await;
                        conn.finish();
                        metrics.record_write_phase(WritePhase::Transaction, began.elapsed());
                        done
                    }
                }));
                crate::service::db::dispatch::await_sqlite_write(task, &heartbeat, &gate, &settings)
                    .await
            }
        }
    }};
    // PostgreSQL: `$body` on a replica that has replayed up to `$floor` (see `replicas`),
    // within the replica's limit, or else on the primary, as `@pg_read`. A read that
    // fails on a replica is made again on the primary.
    (@pg_read_at $db:ident, $pool:ident, $floor:expr, |$conn:ident| $body:expr) => {{
        use crate::metrics::replicas::Fallback;
        use crate::service::db::replicas::Route;
        let mut route = $db.route_read($floor);
        loop {
            match route {
                Route::Replica { replica, floor, limit } => {
                    let attempt = async {
                        let mut conn = crate::service::db::checkout(replica.pool(), &$db.settings).await?;
                        if !replica.confirm_replayed(&mut conn, floor).await? {
                            conn.finish();
                            return Ok(None);
                        }
                        let done = {
                            let $conn = &mut *conn;
                            $body
                        };
                        conn.finish();
                        Ok::<_, crate::service::db::DbError>(Some(done?))
                    };
                    match tokio::time::timeout(limit, attempt).await {
                        Ok(Ok(Some(done))) => {
                            replica.record_read();
                            break Ok(done);
                        }
                        Ok(Ok(None)) => route = Route::Primary(Some(Fallback::BehindWatermark)),
                        Ok(Err(e)) if e.fault() == crate::service::db::Fault::NotFound => {
                            replica.record_read();
                            break Err(e);
                        }
                        Ok(Err(e)) => {
                            replica.read_failed(&e);
                            route = Route::Primary(Some(Fallback::Failed));
                        }
                        Err(_) => {
                            replica.read_failed(&crate::service::db::DbError::Timeout(limit));
                            route = Route::Primary(Some(Fallback::Failed));
                        }
                    }
                }
                Route::Primary(fallback) => {
                    $db.record_primary_read(fallback);
                    break crate::service::db::dispatch::dispatch!(@pg_read $db, $pool, |$conn| $body);
                }
            }
        }
    }};
    // PostgreSQL: `$body` on a pooled connection within the statement deadline.
    (@pg_read $db:ident, $pool:ident, |$conn:ident| $body:expr) => {{
        let mut conn = crate::service::db::checkout($pool, &$db.settings).await?;
        let heartbeat = crate::service::db::Heartbeat::default();
        let work = async {
            let $conn = &mut *conn;
            $body
        };
        let limit = $db.settings.statement_timeout;
        match crate::service::db::dispatch::within_deadline(limit, &heartbeat, work).await {
            Some(done) => {
                conn.finish();
                done.map_err(crate::service::db::DbError::from)
            }
            None => {
                drop(conn);
                Err(crate::service::db::DbError::Timeout(limit))
            }
        }
    }};
    // SQLite: `$body` on a read connection in a task of its own, awaited within the pool
    // and statement timeouts; a read that outlives them finishes in its task, which then
    // puts the connection back.
    (@sqlite_read $db:ident, $pool:ident, |$conn:ident| $body:expr) => {{
        let pool = $pool.clone();
        let settings = $db.settings;
        let read = tokio::spawn(tracing::Instrument::in_current_span(async move {
            let mut pooled = crate::service::db::checkout(&pool, &settings).await?;
            let $conn = &mut *pooled;
            let done = $body;
            pooled.finish();
            done.map_err(crate::service::db::DbError::from)
        }));
        crate::service::db::dispatch::await_sqlite_read(read, &settings).await
    }};
}
pub(crate) use dispatch;

/// `body` in a SQLite transaction that holds the write lock from its start: no other
/// connection commits between what it reads and what it writes (a deferred transaction
/// that read first would fail to write after another's commit, `SQLITE_BUSY_SNAPSHOT`).
/// The wait for the lock is the connection's busy timeout.
pub(crate) async fn immediate_transaction<R, E, F>(conn: &mut SqliteConn, body: F) -> Result<R, E>
where
    F: for<'r> AsyncFnOnce(&'r mut SqliteConn) -> Result<R, E>,
    E: From<diesel::result::Error>,
{
    use diesel::connection::{AnsiTransactionManager, TransactionManager as _};
    conn.spawn_blocking(|inner| {
        AnsiTransactionManager::begin_transaction_sql(inner, "BEGIN IMMEDIATE")
    })
    .await?;
    match body(conn).await {
        Ok(value) => {
            conn.spawn_blocking(AnsiTransactionManager::commit_transaction)
                .await?;
            Ok(value)
        }
        Err(e) => {
            // The body's error is the one to tell; a connection whose rollback failed is
            // left in a transaction, and the pool discards it.
            let _ = conn
                .spawn_blocking(AnsiTransactionManager::rollback_transaction)
                .await;
            Err(e)
        }
    }
}

/// Runs `work` within `limit`, restarted by every `heartbeat` tick; `None` when it
/// missed the deadline (and was dropped).
pub(crate) async fn within_deadline<T>(
    limit: Duration,
    heartbeat: &Heartbeat,
    work: impl Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        done = work => Some(done),
        () = heartbeat.stalled(limit) => None,
    }
}

/// Whether a SQLite write may commit: the write asks just before its COMMIT, the caller
/// at its deadline, and whichever comes first decides.
#[derive(Default)]
pub(crate) struct CommitGate(AtomicU8);

const RUNNING: u8 = 0;
const COMMITTING: u8 = 1;
const ABANDONED: u8 = 2;

impl CommitGate {
    /// The write is about to commit; false if its caller gave up: roll back.
    pub(crate) fn begin_commit(&self) -> bool {
        self.transition(COMMITTING)
    }

    /// The caller gives up; false if the write had begun to commit (its fate is unknown).
    fn abandon(&self) -> bool {
        self.transition(ABANDONED)
    }

    fn transition(&self, to: u8) -> bool {
        self.0
            .compare_exchange(RUNNING, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

/// Awaits a SQLite read's task for at most the pool and the statement timeouts
/// together; a panic in it goes on in the caller.
pub(crate) async fn await_sqlite_read<T>(
    read: tokio::task::JoinHandle<Result<T, DbError>>,
    settings: &DbSettings,
) -> Result<T, DbError> {
    match tokio::time::timeout(settings.pool_timeout + settings.statement_timeout, read).await {
        Ok(joined) => joined_task(joined),
        Err(_) => Err(DbError::Timeout(settings.statement_timeout)),
    }
}

/// Awaits a SQLite write's task: the wait for the write connection (pool timeout), then
/// for the file's write lock (the busy timeout, which is the statement timeout), then
/// its statements, restarted by every `heartbeat` tick (an import's batches).
pub(crate) async fn await_sqlite_write<T, E: From<DbError>>(
    write: tokio::task::JoinHandle<Result<T, E>>,
    heartbeat: &Heartbeat,
    gate: &CommitGate,
    settings: &DbSettings,
) -> Result<T, E> {
    let limit = settings.pool_timeout + 2 * settings.statement_timeout;
    match within_deadline(limit, heartbeat, write).await {
        Some(joined) => joined_task(joined),
        None if gate.abandon() => Err(DbError::Timeout(settings.statement_timeout).into()),
        None => Err(DbError::OutcomeUnknown(settings.statement_timeout).into()),
    }
}

fn joined_task<T, E: From<DbError>>(
    joined: Result<Result<T, E>, tokio::task::JoinError>,
) -> Result<T, E> {
    match joined {
        Ok(done) => done,
        Err(failed) if failed.is_panic() => std::panic::resume_unwind(failed.into_panic()),
        Err(failed) => Err(DbError::Unavailable(failed.to_string()).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_of_commit_and_abandon_decides() {
        let gate = CommitGate::default();
        assert!(gate.begin_commit());
        assert!(!gate.abandon(), "a write committing is not abandoned");
        let gate = CommitGate::default();
        assert!(gate.abandon());
        assert!(!gate.begin_commit(), "an abandoned write rolls back");
    }
}
