//! Read replicas: which one may serve a cache miss, and how each one is doing.
//!
//! A miss may read from a replica only once it has replayed every acknowledged write:
//! the cache hands the load a floor, the watermark every write raised to its commit's
//! WAL position before it was acknowledged (see `wal` and the cache's `lua::BUMP`).
//! Each read asks the replica what it has replayed on the read's own connection, before
//! its statement (one URL may lead to several standbys behind a load balancer, and a
//! standby restored from a backup goes back): PostgreSQL makes a replayed commit
//! visible before it reports its position as replayed, so a statement after the answer
//! sees every write up to it.
//!
//! Each replica is checked in the background a few times a second, each on its own, so
//! that a frozen one delays no other: one that is down, frozen, lagging past
//! `--replica-max-lag`, promoted, or not a standby of this primary is skipped until a
//! check says otherwise; a read that fails on one is made again on the primary, within
//! the same request.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use diesel::sql_types::{Bool, Nullable, Text};
use diesel_async::pooled_connection::deadpool::Pool;
use diesel_async::{AsyncPgConnection, RunQueryDsl as _};

use super::connect::{self, PgConfig, PgSession};
use super::{DbError, build_pool, connection_error_text, pg_manager_config};
use crate::config::{DatabaseUrl, DbSettings, ReplicaSettings, default_pool_size, human_duration};
use crate::logging::{Failure, log_limited};
use crate::metrics::Metrics;
use crate::metrics::replicas::{Fallback, ReplicaState, ReplicaStatus, Standing, lag_seconds};
use crate::service::wal::{ReadFloor, WalPosition};

/// How often every replica (and the primary's position) is checked.
pub const CHECK_EVERY: Duration = Duration::from_millis(200);
/// How long a check may take before its replica counts as down.
const CHECK_LIMIT: Duration = Duration::from_secs(1);
/// How far back the primary's positions are kept, at least, to tell a replica's lag in
/// time (twice `--replica-max-lag` when that is longer).
const HISTORY: Duration = Duration::from_secs(60);
/// How much longer than its statement timeout a read waits for a replica's answer
/// before taking it for frozen.
const ANSWER_MARGIN: Duration = Duration::from_millis(200);

pub(in crate::service) struct Replicas {
    members: Vec<Replica>,
    /// Where the next read starts looking, so reads spread over the replicas.
    turn: AtomicUsize,
    settings: ReplicaSettings,
    db: DbSettings,
    primary: Arc<PgConfig>,
    primary_check: tokio::sync::Mutex<Option<AsyncPgConnection>>,
    /// The primary's positions, oldest first, as the checks read them.
    history: Mutex<VecDeque<(Instant, WalPosition)>>,
    /// The primary's `system_identifier` (a replica must show the same): `None` until
    /// the primary has answered a check, `Some(None)` where the role may not read it.
    primary_system: Mutex<Option<Option<String>>>,
}

pub(in crate::service) struct Replica {
    pool: Pool<AsyncPgConnection>,
    config: Arc<PgConfig>,
    /// What it has replayed, as its last check saw (0: nothing known): for operators;
    /// reads ask for themselves.
    replayed: AtomicU64,
    check: tokio::sync::Mutex<Option<AsyncPgConnection>>,
    status: Arc<ReplicaStatus>,
}

/// Where a read goes.
#[derive(Clone, Copy)]
pub(in crate::service) enum Route<'a> {
    /// To this replica, if it has replayed up to `floor`; its answers within `limit`.
    Replica {
        replica: &'a Replica,
        floor: WalPosition,
        limit: Duration,
    },
    /// To the primary, and why not to a replica (`None`: there are none).
    Primary(Option<Fallback>),
}

#[derive(diesel::QueryableByName)]
struct PrimaryPosition {
    #[diesel(sql_type = Text)]
    position: String,
}

#[derive(diesel::QueryableByName)]
struct SystemIdentifier {
    #[diesel(sql_type = Text)]
    system: String,
}

#[derive(diesel::QueryableByName)]
struct StandbyPosition {
    #[diesel(sql_type = Bool)]
    in_recovery: bool,
    #[diesel(sql_type = Nullable<Text>)]
    position: Option<String>,
}

#[derive(diesel::QueryableByName)]
struct Replayed {
    #[diesel(sql_type = Nullable<Text>)]
    position: Option<String>,
}

impl Replicas {
    pub(super) fn new(
        settings: &ReplicaSettings,
        db: DbSettings,
        primary: Arc<PgConfig>,
        write_origin: &str,
        metrics: Arc<Metrics>,
    ) -> Result<Replicas, DbError> {
        let names: Vec<String> = settings
            .urls
            .iter()
            .map(|url| url.url().target().to_owned())
            .collect();
        let statuses = metrics.reads.register(&names);
        // A statement slower than a read may wait is cancelled by the replica itself,
        // which tells it from a replica that stopped answering.
        let replica_db = DbSettings {
            statement_timeout: read_limit(&db),
            ..db
        };
        let members = settings
            .urls
            .iter()
            .zip(statuses)
            .map(|(url, status)| {
                let config =
                    connect::pg_config(url.url().expose(), &db, PgSession::Pooled { write_origin })
                        .map(Arc::new)
                        .map_err(|e| {
                            DbError::Unavailable(format!(
                                "replica {}: {}",
                                status.name,
                                connection_error_text(&e)
                            ))
                        })?;
                let manager = diesel_async::pooled_connection::AsyncDieselConnectionManager::<
                    AsyncPgConnection,
                >::new_with_config(
                    url.url().expose(),
                    pg_manager_config(config.clone(), replica_db, metrics.clone()),
                );
                let size = db.replica_max_connections.unwrap_or_else(|| {
                    default_pool_size(&DatabaseUrl::Postgres(url.url().clone()))
                });
                let pool = build_pool(manager, &replica_db, size)
                    .map_err(|e| DbError::Unavailable(format!("replica {}: {e}", status.name)))?;
                Ok(Replica {
                    pool,
                    config,
                    replayed: AtomicU64::new(0),
                    check: tokio::sync::Mutex::new(None),
                    status,
                })
            })
            .collect::<Result<Vec<_>, DbError>>()?;
        Ok(Replicas {
            members,
            turn: AtomicUsize::new(0),
            settings: settings.clone(),
            db,
            primary,
            primary_check: tokio::sync::Mutex::new(None),
            history: Mutex::new(VecDeque::new()),
            primary_system: Mutex::new(None),
        })
    }

    /// Where a read that needs `floor` goes: the next serving replica, or the primary.
    pub(super) fn route(&self, floor: ReadFloor) -> Route<'_> {
        let ReadFloor::Replayed(floor) = floor else {
            return Route::Primary(Some(Fallback::WatermarkUnknown));
        };
        let start = self.turn.fetch_add(1, Ordering::Relaxed);
        let count = self.members.len();
        let serving = (0..count)
            .map(|i| &self.members[(start + i) % count])
            .find(|replica| replica.status.standing() == Standing::Serving);
        match serving {
            Some(replica) => Route::Replica {
                replica,
                floor,
                limit: read_limit(&self.db) + ANSWER_MARGIN,
            },
            None => Route::Primary(Some(
                self.members[start % count].status.standing().fallback(),
            )),
        }
    }

    /// One round of checks: the primary's position (returned: it is at or past every
    /// commit acknowledged before this call), then every replica's, each in a task of
    /// its own that this round does not wait for (one still running is not started
    /// again), so that a frozen replica delays no other, nor the primary's.
    pub(super) async fn check(self: &Arc<Self>) -> Option<WalPosition> {
        let primary = self.check_primary().await;
        for index in 0..self.members.len() {
            let replicas = self.clone();
            tokio::spawn(async move {
                let replica = &replicas.members[index];
                if let Ok(held) = replica.check.try_lock() {
                    replicas.check_replica(replica, held).await;
                }
            });
        }
        primary
    }

    /// A round that waits for every replica's check: a server's first, a command's
    /// one look.
    pub(super) async fn check_now(&self) -> Option<WalPosition> {
        let primary = self.check_primary().await;
        let checks = self.members.iter().map(|replica| async {
            self.check_replica(replica, replica.check.lock().await)
                .await
        });
        futures_util::future::join_all(checks).await;
        primary
    }

    async fn check_primary(&self) -> Option<WalPosition> {
        let mut held = self.primary_check.lock().await;
        let read = within(CHECK_LIMIT, async {
            let conn = reconnect(&mut held, &self.primary, self.db.connect_timeout).await?;
            // The insert position: at or past every commit record, even one whose
            // COMMIT returned before it was flushed (synchronous_commit = off).
            let position =
                diesel::sql_query("SELECT pg_current_wal_insert_lsn()::text AS position")
                    .get_result::<PrimaryPosition>(conn)
                    .await
                    .map_err(|e| crate::error_chain::root_cause(&e))?;
            // Managed services may not let the role read it: then replicas are not
            // compared with it.
            let system = system_identifier(conn).await;
            Ok((position, system))
        })
        .await;
        match read {
            Ok((read, system)) => {
                let position = WalPosition::parse_pg(&read.position)?;
                *self
                    .primary_system
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(system);
                let now = Instant::now();
                let kept = HISTORY.max(2 * self.settings.max_lag);
                let mut history = self.history.lock().unwrap_or_else(PoisonError::into_inner);
                history.push_back((now, position));
                while history
                    .front()
                    .is_some_and(|(at, _)| now.duration_since(*at) > kept)
                {
                    history.pop_front();
                }
                Some(position)
            }
            Err(why) => {
                held.take();
                tracing::debug!(error = %why, "cannot read the primary's WAL position");
                None
            }
        }
    }

    async fn check_replica(
        &self,
        replica: &Replica,
        mut held: tokio::sync::MutexGuard<'_, Option<AsyncPgConnection>>,
    ) {
        let read = within(CHECK_LIMIT, async {
            let conn = reconnect(&mut held, &replica.config, self.db.connect_timeout).await?;
            let position = diesel::sql_query(
                "SELECT pg_is_in_recovery() AS in_recovery, \
                 pg_last_wal_replay_lsn()::text AS position",
            )
            .get_result::<StandbyPosition>(conn)
            .await
            .map_err(|e| crate::error_chain::root_cause(&e))?;
            Ok((position, system_identifier(conn).await))
        })
        .await;
        let (read, system) = match read {
            Ok(read) => read,
            Err(why) => {
                held.take();
                replica.mark(Standing::Down, Some(why), None, None);
                return;
            }
        };
        drop(held);
        let primary_system = self
            .primary_system
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if !read.in_recovery {
            // Promoted (a failover), or never a standby: its data may have diverged.
            let why = "not in recovery: a primary (promoted?), not a standby".to_owned();
            replica.mark(Standing::NotAReplica, Some(why), None, None);
            return;
        }
        let Some(primary_system) = primary_system else {
            let why = "the primary has not answered a check yet".to_owned();
            replica.mark(Standing::Down, Some(why), None, None);
            return;
        };
        if let (Some(primary), Some(replica_system)) = (primary_system, system)
            && primary != replica_system
        {
            let why = "a standby of another cluster (its system identifier differs)".to_owned();
            replica.mark(Standing::NotAReplica, Some(why), None, None);
            return;
        }
        let Some(position) = read.position.as_deref().and_then(WalPosition::parse_pg) else {
            let why = "has replayed nothing yet".to_owned();
            replica.mark(Standing::Down, Some(why), None, None);
            return;
        };
        // A replica rebuilt or moved to a new timeline may report less than before.
        replica
            .replayed
            .store(position_number(position), Ordering::Release);
        let (lag, lag_bytes) = self.lag_of(position);
        let too_far = lag > self.settings.max_lag || lag_bytes > self.settings.max_lag_bytes;
        let (standing, why) = if too_far {
            let why = format!(
                "replay {} ({} bytes of WAL) behind the primary, past --replica-max-lag",
                human_duration(lag),
                lag_bytes
            );
            (Standing::Lagging, Some(why))
        } else {
            (Standing::Serving, None)
        };
        replica.status.set_state(ReplicaState {
            standing,
            why,
            lag_seconds: Some(lag_seconds(lag)),
            lag_bytes: Some(lag_bytes),
            replayed: Some(position.to_string()),
        });
    }

    /// How long ago the primary first had WAL past `replayed`, and how many bytes past.
    /// A replica that stopped replaying while the primary moves on lags more each check.
    fn lag_of(&self, replayed: WalPosition) -> (Duration, u64) {
        let history = self.history.lock().unwrap_or_else(PoisonError::into_inner);
        let bytes = history
            .back()
            .map_or(0, |(_, newest)| newest.bytes_after(replayed));
        let since = history
            .iter()
            .find(|(_, position)| *position > replayed)
            .map_or(Duration::ZERO, |(at, _)| at.elapsed());
        (since, bytes)
    }
}

impl Replica {
    pub(in crate::service) fn pool(&self) -> &Pool<AsyncPgConnection> {
        &self.pool
    }

    fn replayed(&self) -> Option<WalPosition> {
        match AtomicU64::load(&self.replayed, Ordering::Acquire) {
            0 => None,
            n => Some(position_from_number(n)),
        }
    }

    /// Whether the replica has replayed up to `floor`, asked on the connection the read
    /// will use, before its statement (so the statement's snapshot is at least as new).
    pub(in crate::service) async fn confirm_replayed(
        &self,
        conn: &mut AsyncPgConnection,
        floor: WalPosition,
    ) -> diesel::QueryResult<bool> {
        let read = diesel::sql_query("SELECT pg_last_wal_replay_lsn()::text AS position")
            .get_result::<Replayed>(conn)
            .await?;
        Ok(read
            .position
            .as_deref()
            .and_then(WalPosition::parse_pg)
            .is_some_and(|position| position >= floor))
    }

    pub(in crate::service) fn record_read(&self) {
        self.status.record_read();
    }

    /// A read on it failed. One that could not reach it, or got no answer in time,
    /// skips it until its next check; a statement it refused (a conflict with
    /// recovery, its statement timeout) only this read.
    pub(in crate::service) fn read_failed(&self, error: &DbError) {
        log_limited!(warn, Failure::Replica, replica = %self.status.name, %error, "a read on a replica failed; made again on the primary");
        if error.fault() == super::Fault::Unavailable {
            self.status.set_down(format!("a read failed: {error}"));
        }
    }

    fn mark(
        &self,
        standing: Standing,
        why: Option<String>,
        lag_seconds: Option<f64>,
        lag_bytes: Option<u64>,
    ) {
        let previous = self.status.standing();
        if previous != standing && previous != Standing::Unchecked {
            tracing::warn!(replica = %self.status.name, standing = standing.name(), why = why.as_deref().unwrap_or(""), "replica skipped");
        }
        self.status.set_state(ReplicaState {
            standing,
            why,
            lag_seconds,
            lag_bytes,
            replayed: self.replayed().map(|position| position.to_string()),
        });
    }
}

/// How long a read's statement may run on a replica before the replica cancels it
/// and the read is made on the primary.
fn read_limit(db: &DbSettings) -> Duration {
    (db.statement_timeout / 3).clamp(Duration::from_millis(100), CHECK_LIMIT)
}

/// The server's `system_identifier`, if the role may read it.
async fn system_identifier(conn: &mut AsyncPgConnection) -> Option<String> {
    diesel::sql_query("SELECT system_identifier::text AS system FROM pg_control_system()")
        .get_result::<SystemIdentifier>(conn)
        .await
        .ok()
        .map(|row| row.system)
}

/// The check's own connection, made again when the last one failed.
async fn reconnect<'c>(
    held: &'c mut Option<AsyncPgConnection>,
    config: &PgConfig,
    timeout: Duration,
) -> Result<&'c mut AsyncPgConnection, String> {
    if held.is_none() {
        let conn = connect::connect_pg(config, timeout)
            .await
            .map_err(|e| connection_error_text(&e))?;
        *held = Some(conn);
    }
    held.as_mut().ok_or_else(|| "no connection".to_owned())
}

async fn within<T>(
    limit: Duration,
    work: impl Future<Output = Result<T, String>>,
) -> Result<T, String> {
    tokio::time::timeout(limit, work)
        .await
        .unwrap_or_else(|_| Err(format!("did not answer within {}", human_duration(limit))))
}

/// Positions are kept in an atomic as `position + 1`, so that 0 means none.
fn position_number(position: WalPosition) -> u64 {
    position.raw().saturating_add(1)
}

fn position_from_number(n: u64) -> WalPosition {
    WalPosition::from_raw(n.saturating_sub(1))
}
