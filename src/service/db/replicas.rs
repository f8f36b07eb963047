//! Read replicas: which one may serve a cache miss, and how each one is doing.
//!
//! A miss may read from a replica only once it has replayed every acknowledged write:
//! the cache hands the load a floor, the watermark every write raised to its commit's
//! WAL position before it was acknowledged (see `wal` and the cache's `lua::BUMP`).
//! What each replica has replayed is checked in the background a few times a second,
//! and on the read's own connection, before its statement, when that check is older
//! than the floor: PostgreSQL makes a replayed commit visible before it reports its
//! position as replayed, so a statement after the check sees every write up to it.
//!
//! A replica that is down, frozen, lagging past `--replica-max-lag`, promoted, or not a
//! standby of this primary is skipped until a check says otherwise; a read that fails
//! on one is made again on the primary, within the same request.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use diesel::sql_types::{Bool, Nullable, Text};
use diesel_async::pooled_connection::deadpool::Pool;
use diesel_async::{AsyncPgConnection, RunQueryDsl as _};

use super::connect::{self, PgConfig, PgSession};
use super::{DbError, build_pool, connection_error_text, pg_manager_config};
use crate::config::{DbSettings, ReplicaSettings, human_duration};
use crate::metrics::Metrics;
use crate::metrics::replicas::{Fallback, ReplicaState, ReplicaStatus, Standing, lag_seconds};
use crate::service::wal::{ReadFloor, WalPosition};

/// How often every replica (and the primary's position) is checked.
pub const CHECK_EVERY: Duration = Duration::from_millis(200);
/// How long a check may take before its replica counts as down.
const CHECK_LIMIT: Duration = Duration::from_secs(1);
/// How far back the primary's positions are kept, to tell a replica's lag in time.
const HISTORY: Duration = Duration::from_secs(60);

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
    /// The primary's `system_identifier`: a replica must show the same.
    primary_system: Mutex<Option<String>>,
}

pub(in crate::service) struct Replica {
    pool: Pool<AsyncPgConnection>,
    config: Arc<PgConfig>,
    /// What it has replayed, as last seen (0: nothing known).
    replayed: AtomicU64,
    check: tokio::sync::Mutex<Option<AsyncPgConnection>>,
    status: Arc<ReplicaStatus>,
}

/// Where a read goes.
#[derive(Clone, Copy)]
pub(in crate::service) enum Route<'a> {
    /// To this replica, for at most `limit`; `confirm`: first ask it whether it has
    /// replayed this far.
    Replica {
        replica: &'a Replica,
        confirm: Option<WalPosition>,
        limit: Duration,
    },
    /// To the primary, and why not to a replica (`None`: there are none).
    Primary(Option<Fallback>),
}

#[derive(diesel::QueryableByName)]
struct PrimaryPosition {
    #[diesel(sql_type = Text)]
    position: String,
    #[diesel(sql_type = Text)]
    system: String,
}

#[derive(diesel::QueryableByName)]
struct StandbyPosition {
    #[diesel(sql_type = Bool)]
    in_recovery: bool,
    #[diesel(sql_type = Nullable<Text>)]
    position: Option<String>,
    #[diesel(sql_type = Text)]
    system: String,
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
                    pg_manager_config(config.clone(), db, metrics.clone()),
                );
                let pool = build_pool(manager, &db, db.max_connections)
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
                confirm: (replica.replayed() < Some(floor)).then_some(floor),
                limit: self.read_limit(),
            },
            None => Route::Primary(Some(
                self.members[start % count].status.standing().fallback(),
            )),
        }
    }

    /// How long a read may wait for a replica before it is made on the primary.
    fn read_limit(&self) -> Duration {
        (self.db.statement_timeout / 3).clamp(Duration::from_millis(100), CHECK_LIMIT)
    }

    /// One round of checks: the primary's position first (returned: it is at or past
    /// every commit acknowledged before this call), then every replica's, at once.
    pub(super) async fn check(&self) -> Option<WalPosition> {
        let primary = self.check_primary().await;
        let now = Instant::now();
        if let Some(position) = primary {
            let mut history = self.history.lock().unwrap_or_else(PoisonError::into_inner);
            history.push_back((now, position));
            while history
                .front()
                .is_some_and(|(at, _)| now.duration_since(*at) > HISTORY)
            {
                history.pop_front();
            }
        }
        let checks = self
            .members
            .iter()
            .map(|replica| self.check_replica(replica));
        futures_util::future::join_all(checks).await;
        primary
    }

    async fn check_primary(&self) -> Option<WalPosition> {
        let mut held = self.primary_check.lock().await;
        let read = within(CHECK_LIMIT, async {
            let conn = reconnect(&mut held, &self.primary, self.db.connect_timeout).await?;
            diesel::sql_query(
                "SELECT pg_current_wal_lsn()::text AS position, \
                 (SELECT system_identifier::text FROM pg_control_system()) AS system",
            )
            .get_result::<PrimaryPosition>(conn)
            .await
            .map_err(|e| crate::error_chain::root_cause(&e))
        })
        .await;
        match read {
            Ok(read) => {
                *self
                    .primary_system
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(read.system);
                WalPosition::parse_pg(&read.position)
            }
            Err(why) => {
                held.take();
                tracing::debug!(error = %why, "cannot read the primary's WAL position");
                None
            }
        }
    }

    async fn check_replica(&self, replica: &Replica) {
        let mut held = replica.check.lock().await;
        let read = within(CHECK_LIMIT, async {
            let conn = reconnect(&mut held, &replica.config, self.db.connect_timeout).await?;
            diesel::sql_query(
                "SELECT pg_is_in_recovery() AS in_recovery, \
                 pg_last_wal_replay_lsn()::text AS position, \
                 (SELECT system_identifier::text FROM pg_control_system()) AS system",
            )
            .get_result::<StandbyPosition>(conn)
            .await
            .map_err(|e| crate::error_chain::root_cause(&e))
        })
        .await;
        let read = match read {
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
        if primary_system
            .as_ref()
            .is_some_and(|system| *system != read.system)
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
        let Some(position) = read.position.as_deref().and_then(WalPosition::parse_pg) else {
            return Ok(false);
        };
        self.replayed
            .fetch_max(position_number(position), Ordering::AcqRel);
        Ok(position >= floor)
    }

    pub(in crate::service) fn record_read(&self) {
        self.status.record_read();
    }

    /// A read on it failed. One that could not reach it skips it until its next
    /// check; a statement it refused (a conflict with recovery) only this read.
    pub(in crate::service) fn read_failed(&self, error: &DbError) {
        tracing::warn!(replica = %self.status.name, %error, "a read on a replica failed; made again on the primary");
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
