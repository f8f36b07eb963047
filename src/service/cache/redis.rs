//! The Redis backend. The clock lives in Redis, shared by every process, and every
//! entry's value opens with its stamp (see `clock`): a bump retires the entries that
//! share one of its tags, and a late store of a retired value is never served. Each
//! script touches keys of one hash slot only, so all of this works on a Redis Cluster
//! too (see `keys`). Which deployment (one server, Sentinel, Cluster, TLS) is
//! `redis_link`'s business.
//!
//! Failure policy: every call has a short timeout; after a failure Redis is skipped for
//! a moment (circuit breaker) and requests go to the database. A failure may have eaten
//! an invalidation, so before Redis is trusted again everything is retired. A new
//! master (after a failover or a restart) may lack the last bumps: Redis itself retires
//! everything the first time a script runs on it (see `lua`).
//!
//! Servers keep ready responses in their near-cache and serve them without asking Redis
//! (see `near_lease`). A bump therefore also publishes its tags, and the writer waits
//! until every server holding a live lease has confirmed it (or its lease has run out)
//! before its write is acknowledged. Hit and miss counts go to Redis through
//! `shared_counts`.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use redis::RedisResult;

use crate::config::{RedisDeployment, RedisUrl};
use crate::logging::{Failure, log_limited};
use crate::metrics::events::Cause;
use crate::metrics::{Counts, HitsMisses, Metrics};
use crate::redis_link::{CONNECT_TIMEOUT, RESPONSE_TIMEOUT, RedisLink, key_slot};
use crate::service::cache::FILL_LOCK_TTL;
use crate::service::cache::backend::{
    CacheBackend, CacheBackendStatus, Fill, FillClaim, Lookup, Pending, RedisStats, RedisStatus,
    Watermark,
};
use crate::service::cache::breaker::Health;
use crate::service::cache::clock::{Stamp, TagClock};
use crate::service::cache::entry_calls::{self, Claimed, SEQ_DIGITS, Staged, millis, seq_digits};
use crate::service::cache::keys::{EntryKey, KeySpace};
use crate::service::cache::lua::{Scripts, initial_seq};
use crate::service::cache::near_lease::{self, CLOCK_OF, NearLease};
use crate::service::cache::shared_counts;
use crate::service::cache::tags::{Tag, TagSet};
use crate::service::wal::WalPosition;

/// A bump's number, and what it still waits for: live leases of other servers that
/// have not confirmed it, and the ms left after a master inherited the registry.
struct Bumped {
    seq: u64,
    pending: u64,
    inherited_wait_ms: u64,
}

pub struct RedisCache {
    link: RedisLink,
    url: RedisUrl,
    keys: KeySpace,
    metrics: Arc<Metrics>,
    scripts: Arc<Scripts>,
    health: Health,
    /// This server's lease on serving from its near-cache; never valid in a command.
    near: Arc<NearLease>,
    /// Set in a server (which holds a lease), never in a command.
    serving: AtomicBool,
    resync: tokio::sync::Mutex<()>,
}

impl RedisCache {
    /// Connects lazily: an unreachable Redis never stops the caller.
    pub fn new(
        url: &RedisUrl,
        keys: KeySpace,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<RedisCache> {
        let health = Health::new(matches!(url.deployment(), RedisDeployment::Cluster { .. }));
        let link = RedisLink::new(url)?;
        Ok(RedisCache {
            link,
            url: url.clone(),
            keys,
            metrics,
            scripts: Arc::new(Scripts::default()),
            health,
            near: Arc::new(NearLease::default()),
            serving: AtomicBool::new(false),
            resync: tokio::sync::Mutex::new(()),
        })
    }

    /// Starts what a server runs beside its requests: the near-cache lease (it learns
    /// every new generation and confirms it) and the flushing of hit and miss counts.
    fn start_tasks(&self, #[cfg(feature = "test-hooks")] hooks: Arc<crate::test_hooks::TestHooks>) {
        self.serving.store(true, Ordering::Release);
        tokio::spawn(near_lease::keep(near_lease::Context {
            link: self.link.clone(),
            keys: self.keys.clone(),
            lease: self.near.clone(),
            scripts: self.scripts.clone(),
            metrics: self.metrics.clone(),
            #[cfg(feature = "test-hooks")]
            hooks,
        }));
        tokio::spawn(shared_counts::flush_forever(
            self.link.conn(),
            self.keys.clone(),
            self.metrics.clone(),
        ));
    }

    /// The clock this server may serve ready responses by without asking Redis: `None`
    /// unless its lease is live and it hears every bump.
    fn near_clock_now(&self) -> Option<&TagClock> {
        // A failure may have eaten an invalidation this server's lease never heard of.
        if self.health.owed() {
            return None;
        }
        self.near.clock()
    }

    /// With `fill_lock`, a miss also tries to take the key's fill lock for that long,
    /// so that one process loads while the others wait for its value. A lookup
    /// abandoned midway (its request dropped) may have taken the lock without learning
    /// so: it is released then, rather than left for everyone to wait out.
    async fn read_entry(&self, key: &EntryKey, fill_lock: Option<FillClaim>) -> Lookup {
        let maybe_taken = MaybeTakenLock(fill_lock.map(|_| (&self.link, key)));
        let found = self.look_up_entry(key, fill_lock).await;
        maybe_taken.answered();
        found
    }

    async fn look_up_entry(&self, key: &EntryKey, fill_lock: Option<FillClaim>) -> Lookup {
        if !self.ready().await {
            return Lookup::Unavailable;
        }
        let near = self.near.clock();
        if near.is_none()
            && self.serving.load(Ordering::Acquire)
            && self.link.may_have_two_masters()
        {
            // An old Sentinel master answers until it is reconfigured, with what it held
            // before the failover: a server trusts the clock only through its lease,
            // which is renewed on the master the sentinels name.
            return Lookup::Unavailable;
        }
        let mut conn = self.link.conn();
        let call = entry_calls::get_claiming(&mut conn, &self.scripts, key, fill_lock);
        let Some((stored, claimed)) = self.guarded_entry(key.as_str(), "lookup", call).await else {
            return Lookup::Unavailable;
        };
        let present = stored.is_some();
        let found = stored.and_then(unstamped);
        // Whether the entry is current, and what a value loaded now is stamped with.
        let (current, seq) = match near {
            Some(clock) => (
                found
                    .as_ref()
                    .is_some_and(|(stamp, _)| clock.is_current(stamp)),
                clock.seq(),
            ),
            None => {
                let stamp = found.as_ref().map(|(stamp, _)| stamp);
                match self.check(stamp).await {
                    Some(checked) => checked,
                    None => return Lookup::Unavailable,
                }
            }
        };
        let retired = match (current, found) {
            (true, Some((stamp, value))) => {
                if claimed == Claimed::Taken {
                    // Claimed for a retired value, where another process has stored a
                    // current one since.
                    self.release_fill_lock_now(key).await;
                }
                return Lookup::Hit { value, stamp };
            }
            (false, Some((stamp, _))) => Some(Some(stamp.seq)),
            // Present but unreadable: as good as retired.
            _ if present => Some(None),
            _ => None,
        };
        let may_fill = match (fill_lock, retired, claimed) {
            (None, ..) => true,
            (Some(_), _, Claimed::Taken) => true,
            // Claimed for the retired value seen, which stands: another caller holds it.
            (Some(claim), Some(_), Claimed::NotTaken) if claim.retired_seen.is_some() => false,
            // A retired value stood where the claim would have taken the lock.
            (Some(claim), Some(retired), _) => self.take_fill_lock(key, claim.ttl, retired).await,
            (Some(_), None, _) => false,
        };
        Lookup::Miss {
            seq,
            may_fill,
            // Not a value that could not be read: no write says its data is retired.
            retired: matches!(retired, Some(Some(_))),
        }
    }

    /// Asks Redis whether `stamp` is current: (current, the clock's sequence).
    async fn check(&self, stamp: Option<&Stamp>) -> Option<(bool, u64)> {
        let mut conn = self.link.conn();
        let mut invocation = self.on_control_keys(&self.scripts.check);
        invocation.arg(initial_seq());
        for tag in stamp.iter().flat_map(|stamp| stamp.tags.iter()) {
            invocation.arg(tag.index());
        }
        let call = invocation.invoke_async::<Vec<Option<u64>>>(&mut conn);
        self.metrics.record_entry_round_trip();
        let answer = self.guarded("check an entry", call).await?;
        let (seq, bumped) = answer.split_first()?;
        let current =
            stamp.is_some_and(|stamp| bumped.iter().all(|at| at.is_none_or(|at| at <= stamp.seq)));
        Some((current, (*seq)?))
    }

    /// The fill lock where a retired value (loaded at `retired`; `None`: unreadable)
    /// stands. Not taken if a later value was stored since that lookup: the caller then
    /// looks again.
    async fn take_fill_lock(&self, key: &EntryKey, ttl: Duration, retired: Option<u64>) -> bool {
        let mut conn = self.link.conn();
        let mut invocation = self.scripts.lock.key(key.as_str());
        let call = invocation
            .key(key.fill_lock())
            .arg(millis(ttl))
            .arg(retired.map_or(String::new(), seq_digits))
            .invoke_async::<u8>(&mut conn);
        self.guarded_entry(key.as_str(), "lock", call).await == Some(1)
    }

    async fn release_fill_lock_now(&self, key: &EntryKey) {
        let mut conn = self.link.conn();
        let mut command = redis::cmd("DEL");
        let call = command.arg(key.fill_lock()).query_async::<()>(&mut conn);
        self.guarded_entry(key.as_str(), "release the fill lock", call)
            .await;
    }

    /// Stores each fill's value after its stamp: all in one round trip, or on a cluster
    /// (where entries live in slots of their own) one per entry, sent together. A store
    /// a write has outdated meanwhile is harmless, since its stamp says so; this only
    /// skips the ones already known to be.
    async fn write_entries(&self, fills: Vec<Fill<'_>>) -> Vec<bool> {
        let mut stored = vec![false; fills.len()];
        if !self.ready().await {
            return stored;
        }
        let clock = self.near.clock();
        let mut current = Vec::with_capacity(fills.len());
        for (at, fill) in fills.iter().enumerate() {
            if clock.is_some_and(|clock| !clock.is_current(&fill.stamp)) {
                // Others may be waiting for this value: let them load theirs.
                self.release_fill_lock_now(fill.entry).await;
            } else {
                current.push(at);
            }
        }
        let batches: Vec<Vec<usize>> = match self.health.per_slot() {
            true => current.into_iter().map(|at| vec![at]).collect(),
            false if current.is_empty() => Vec::new(),
            false => vec![current],
        };
        let calls = batches.iter().map(|batch| async {
            let mut conn = self.link.conn();
            let values = batch
                .iter()
                .map(|&at| Staged {
                    key: fills[at].entry,
                    stamped: stamped(&fills[at].stamp, &fills[at].value),
                    ttl: fills[at].ttl,
                })
                .collect();
            let call =
                entry_calls::store_staged(&mut conn, &self.scripts.promote, values, FILL_LOCK_TTL);
            let first = fills[batch[0]].entry.as_str();
            self.guarded_entry(first, "store", call).await
        });
        let answers = futures_util::future::join_all(calls).await;
        for (batch, answer) in batches.iter().zip(answers) {
            for (&at, was_stored) in batch.iter().zip(answer.unwrap_or_default()) {
                stored[at] = was_stored;
            }
        }
        stored
    }

    /// Retires every entry sharing a tag with `tags`, and returns once every server
    /// serving from its near-cache has confirmed that (or lost its lease). False when
    /// Redis could not be reached: the resync flag then makes sure nothing from before
    /// is served by this process until everything is retired, and the caller must tell
    /// the others.
    async fn retire(
        &self,
        tags: &TagSet,
        cause: Cause<'_>,
        written_at: Option<WalPosition>,
    ) -> bool {
        if !self.ready().await {
            return false;
        }
        let Some(bumped) = self.bump_unchecked(tags, cause, written_at).await else {
            return false;
        };
        // This server vouches for its own mirror, so its confirmation is not awaited.
        self.near.record_own_bump(bumped.seq, tags);
        self.wait_for_acks(bumped).await
    }

    async fn bump_unchecked(
        &self,
        tags: &TagSet,
        cause: Cause<'_>,
        written_at: Option<WalPosition>,
    ) -> Option<Bumped> {
        if self.link.may_have_two_masters() {
            // Never onto a master the sentinels have given up: it would be lost.
            self.guarded("ask the sentinels", self.link.named_master())
                .await?;
        }
        let mut conn = self.link.conn();
        let mut invocation = self.on_control_keys(&self.scripts.bump);
        invocation
            .arg(initial_seq())
            .arg(self.keys.bumps_channel())
            .arg(self.near.news(cause))
            .arg(written_at.map(WalPosition::sortable).unwrap_or_default())
            .arg(self.near.id())
            .arg(millis(near_lease::LEASE));
        for tag in tags.iter() {
            invocation.arg(tag.index());
        }
        let call = invocation.invoke_async::<(u64, u64, u64)>(&mut conn);
        let (seq, pending, inherited_wait_ms) = self.guarded("invalidate", call).await?;
        Some(Bumped {
            seq,
            pending,
            inherited_wait_ms,
        })
    }

    /// The replicas' watermark. Not from a master the sentinels may have given up (as
    /// for lookups): an old master's watermark may be lower than an acknowledged write.
    /// A failure only sends the miss to the primary: it trips no breaker.
    async fn read_watermark(&self) -> Option<Watermark> {
        if !self.ready().await || (self.near.clock().is_none() && self.link.may_have_two_masters())
        {
            return None;
        }
        let mut conn = self.link.conn();
        let mut invocation = self.on_control_keys(&self.scripts.watermark);
        invocation.arg(initial_seq());
        let call = invocation.invoke_async::<(Option<String>, Option<String>, String)>(&mut conn);
        let (wal, wal_seq, seq) = deadline(call).await.ok()?;
        Some(Watermark {
            known: wal
                .as_deref()
                .and_then(WalPosition::from_sortable)
                .filter(|_| wal_seq.as_deref() == Some(seq.as_str())),
            seq,
        })
    }

    async fn heal(&self, seen: &Watermark, primary: WalPosition) -> bool {
        if !self.ready().await {
            return false;
        }
        if self.link.may_have_two_masters() && deadline(self.link.named_master()).await.is_err() {
            return false;
        }
        let mut conn = self.link.conn();
        let mut invocation = self.on_control_keys(&self.scripts.heal);
        invocation
            .arg(initial_seq())
            .arg(&seen.seq)
            .arg(primary.sortable());
        let call = invocation.invoke_async::<u8>(&mut conn);
        deadline(call).await == Ok(1)
    }

    /// Polls until no live lease of another server lags behind the bump (as the bump
    /// found them at first). Bounded: a server that stops confirming loses its lease
    /// within [`near_lease::LEASE`], and is no longer waited for; after a master took
    /// over, until every lease from before has run out.
    async fn wait_for_acks(&self, bumped: Bumped) -> bool {
        let Bumped {
            seq,
            mut pending,
            mut inherited_wait_ms,
        } = bumped;
        let mut give_up = Instant::now() + near_lease::LEASE + Duration::from_millis(500);
        let mut poll = Duration::from_micros(200);
        while pending > 0 || inherited_wait_ms > 0 {
            let now = Instant::now();
            give_up = give_up.max(now + Duration::from_millis(inherited_wait_ms + 50));
            if now >= give_up {
                tracing::warn!(
                    pending,
                    "servers did not confirm an invalidation in time; going on without them"
                );
                return true;
            }
            // Other servers confirm within a round trip or two: look again within a
            // millisecond. A master that took over makes writers wait up to a lease:
            // back off to 20 ms, without sleeping past the end of that wait.
            let nap = match inherited_wait_ms {
                0 => poll.min(Duration::from_millis(1)),
                wait => poll.min(Duration::from_millis(wait)),
            };
            tokio::time::sleep(nap).await;
            poll = (poll * 2).min(Duration::from_millis(20));
            let mut conn = self.link.conn();
            let mut invocation = self.scripts.pending_acks.key(self.keys.near_registry());
            let call = invocation
                .arg(seq)
                .arg(millis(near_lease::LEASE))
                .arg(self.near.id())
                .invoke_async::<(u64, u64)>(&mut conn);
            let Some(state) = self.guarded("confirm an invalidation", call).await else {
                return false;
            };
            (pending, inherited_wait_ms) = state;
        }
        true
    }

    /// Redis server-wide keyspace hits and misses, and the service's shared counters.
    /// Not guarded: `cache-metrics` reports an unreachable Redis as an error.
    async fn read_stats(&self) -> RedisResult<RedisStats> {
        let per_master = self.link.info_stats().await?;
        let sum = |field: &str| -> u64 {
            per_master
                .iter()
                .map(|info| info.get::<u64>(field).unwrap_or_default())
                .sum()
        };
        let keyspace = HitsMisses {
            hits: sum("keyspace_hits"),
            misses: sum("keyspace_misses"),
        };
        let mut conn = self.link.conn();
        let shared = shared_counts::read(&mut conn, &self.keys).await?;
        let replica_reads = shared_counts::read_replica_reads(&mut conn, &self.keys).await?;
        Ok(RedisStats {
            keyspace,
            shared,
            replica_reads,
        })
    }

    /// The sums of every process's counters, as last flushed (each process flushes once
    /// a second); `None` when Redis does not answer.
    async fn read_shared_counts_now(&self) -> Option<Counts> {
        // `is_open`, not `skipping`: the dashboard must never take the one try a request
        // makes to close the breaker, since this read reports neither success nor failure.
        if self.health.is_open() {
            return None;
        }
        // Only the dashboard reads these: a failure here is no cache failure.
        let mut conn = self.link.conn();
        let read = shared_counts::read(&mut conn, &self.keys);
        tokio::time::timeout(RESPONSE_TIMEOUT, read)
            .await
            .ok()?
            .ok()
    }

    fn redis_status(&self) -> RedisStatus {
        let state = if self.health.is_open() {
            "circuit open"
        } else if self.health.owed() {
            "resyncing"
        } else if !self.health.ever_succeeded() {
            "connecting"
        } else {
            "connected"
        };
        RedisStatus {
            url: self.url.to_string(),
            state,
            near_lease: self.near.clock().is_some(),
            topology: self.link.topology(),
        }
    }

    /// `script` with the KEYS every script that reads the clock takes: the clock, the
    /// master that wrote it, and the registry (see `lua`).
    fn on_control_keys<'s>(&self, script: &'s redis::Script) -> redis::ScriptInvocation<'s> {
        let mut invocation = script.key(self.keys.clock(CLOCK_OF));
        invocation
            .key(self.keys.master(CLOCK_OF))
            .key(self.keys.near_registry());
        invocation
    }

    /// False while the breaker is open, or while a resync is owed and cannot be paid.
    /// One caller resyncs at a time; the others go to the database meanwhile.
    async fn ready(&self) -> bool {
        if self.health.skipping() {
            return false;
        }
        if !self.health.owed() {
            return true;
        }
        let Ok(_one_at_a_time) = self.resync.try_lock() else {
            return false;
        };
        let failures = self.health.failures();
        let cause =
            Cause::recovery("Redis answers again: everything cached before the failure retired");
        if self
            .bump_unchecked(&TagSet::all(), cause, None)
            .await
            .is_none()
        {
            return false;
        }
        if self.health.resynced(failures) {
            self.metrics.record_invalidation(cause);
            tracing::info!(redis = %self.url, "Redis answers again: retired everything cached before the failure");
        }
        !self.health.owed()
    }

    /// Runs one call on an entry. In a cluster, a failure skips only the entry's hash
    /// slot for a moment: entries hold no invalidations, so the other masters keep
    /// serving and nothing is owed. Elsewhere it is [`Self::guarded`].
    async fn guarded_entry<T>(
        &self,
        entry: &str,
        operation: &str,
        call: impl Future<Output = RedisResult<T>>,
    ) -> Option<T> {
        if !self.health.per_slot() {
            self.metrics.record_entry_round_trip();
            return self.guarded(operation, call).await;
        }
        let slot = key_slot(entry.as_bytes());
        if self.health.slot_skipped(slot) {
            return None;
        }
        self.metrics.record_entry_round_trip();
        let error = match deadline(call).await {
            Ok(value) => return Some(value),
            Err(error) => error,
        };
        self.health.slot_failed(slot);
        self.metrics.record_cache_error();
        log_limited!(warn, Failure::Cache, redis = %self.url, %error, "cache {operation} failed; serving that key's slot from the database");
        None
    }

    /// Runs one Redis call with a hard deadline; a failure opens the breaker.
    async fn guarded<T>(
        &self,
        operation: &str,
        call: impl Future<Output = RedisResult<T>>,
    ) -> Option<T> {
        let error = match deadline(call).await {
            Ok(value) => {
                self.health.succeeded();
                return Some(value);
            }
            Err(error) => error,
        };
        self.metrics.record_cache_error();
        self.health.failed();
        log_limited!(warn, Failure::Cache, redis = %self.url, %error, "cache {operation} failed; serving from the database");
        None
    }
}

/// One Redis call with a hard deadline (the first call of a connection also connects
/// and may load the script); the error as it is logged.
async fn deadline<T>(call: impl Future<Output = RedisResult<T>>) -> Result<T, String> {
    match tokio::time::timeout(CONNECT_TIMEOUT + RESPONSE_TIMEOUT, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".to_owned()),
    }
}

/// A fill lock a lookup under way may have taken (a script ran, its answer not read
/// yet). Dropped before the answer, it deletes the lock: one that was another caller's
/// costs at most a second load, while one left behind would make every reader of the
/// key wait its whole TTL.
/// Borrowed while the lookup runs: the connection and the lock's name are made only
/// when it is dropped unanswered, off the lookup's hot path.
struct MaybeTakenLock<'a>(Option<(&'a RedisLink, &'a EntryKey)>);

impl MaybeTakenLock<'_> {
    /// The caller knows now whether it holds the lock, and answers for it.
    fn answered(mut self) {
        self.0 = None;
    }
}

impl Drop for MaybeTakenLock<'_> {
    fn drop(&mut self) {
        if let Some((link, key)) = self.0.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let (mut conn, lock) = (link.conn(), key.fill_lock());
            runtime.spawn(async move {
                let mut command = redis::cmd("DEL");
                let delete = command.arg(lock).query_async::<()>(&mut conn);
                let _ = tokio::time::timeout(RESPONSE_TIMEOUT, delete).await;
            });
        }
    }
}

/// An entry's value as Redis holds it: the stamp (its sequence in [`SEQ_DIGITS`]
/// decimal digits, the number of tags and each tag, little-endian), then the bytes.
fn stamped(stamp: &Stamp, value: &[u8]) -> Vec<u8> {
    let tags = u16::try_from(stamp.tags.len()).unwrap_or(u16::MAX);
    let mut out = Vec::with_capacity(SEQ_DIGITS + 2 + 4 * usize::from(tags) + value.len());
    out.extend_from_slice(seq_digits(stamp.seq).as_bytes());
    out.extend_from_slice(&tags.to_le_bytes());
    for tag in stamp.tags.iter().take(usize::from(tags)) {
        out.extend_from_slice(&(tag.index() as u32).to_le_bytes());
    }
    out.extend_from_slice(value);
    out
}

/// [`stamped`]'s stamp and value; `None` for bytes that are not one (then a miss).
fn unstamped(stored: Vec<u8>) -> Option<(Stamp, Bytes)> {
    let seq = std::str::from_utf8(stored.get(..SEQ_DIGITS)?)
        .ok()?
        .parse()
        .ok()?;
    let count = u16::from_le_bytes(stored.get(SEQ_DIGITS..SEQ_DIGITS + 2)?.try_into().ok()?);
    let value_at = SEQ_DIGITS + 2 + 4 * usize::from(count);
    let tags = stored
        .get(SEQ_DIGITS + 2..value_at)?
        .chunks_exact(4)
        .map(|tag| {
            let index = u32::from_le_bytes(tag.try_into().ok()?);
            Tag::from_index(u64::from(index))
        })
        .collect::<Option<TagSet>>()?;
    let value = Bytes::from(stored).slice(value_at..);
    Some((Stamp { seq, tags }, value))
}

impl CacheBackend for RedisCache {
    fn describe(&self) -> String {
        format!("Redis at {} (key prefix {})", self.url, self.keys.prefix())
    }

    fn origin_tag(&self) -> String {
        // The shown URL: the password says nothing about which cache this is.
        let identity = format!("{}\n{}", self.url, self.keys.prefix());
        format!(
            "redis-{:016x}",
            crate::stable_hash::fnv1a64(identity.as_bytes())
        )
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn shares_fills(&self) -> bool {
        true
    }

    fn status(&self) -> CacheBackendStatus {
        CacheBackendStatus {
            kind: "redis",
            redis: Some(self.redis_status()),
        }
    }

    fn near_clock(&self) -> Option<&TagClock> {
        self.near_clock_now()
    }

    fn start_server_tasks(
        &self,
        #[cfg(feature = "test-hooks")] hooks: Arc<crate::test_hooks::TestHooks>,
    ) {
        self.start_tasks(
            #[cfg(feature = "test-hooks")]
            hooks,
        );
    }

    /// Adds this process's counts to the shared ones now (a command, before it exits).
    fn flush_counts(&self) -> Pending<'_, ()> {
        Box::pin(async {
            shared_counts::Flushed::new(&self.keys)
                .flush(&mut self.link.conn(), &self.metrics)
                .await;
        })
    }

    fn lookup<'a>(
        &'a self,
        entry: &'a EntryKey,
        fill_lock: Option<FillClaim>,
    ) -> Pending<'a, Lookup> {
        Box::pin(self.read_entry(entry, fill_lock))
    }

    fn release_fill_lock<'a>(&'a self, entry: &'a EntryKey) -> Pending<'a, ()> {
        Box::pin(self.release_fill_lock_now(entry))
    }

    fn store_all<'a>(&'a self, fills: Vec<Fill<'a>>) -> Pending<'a, Vec<bool>> {
        Box::pin(self.write_entries(fills))
    }

    fn bump<'a>(
        &'a self,
        tags: &'a TagSet,
        cause: Cause<'a>,
        written_at: Option<WalPosition>,
    ) -> Pending<'a, bool> {
        Box::pin(self.retire(tags, cause, written_at))
    }

    fn watermark(&self) -> Pending<'_, Option<Watermark>> {
        Box::pin(self.read_watermark())
    }

    fn heal_watermark<'a>(
        &'a self,
        seen: &'a Watermark,
        primary: WalPosition,
    ) -> Pending<'a, bool> {
        Box::pin(self.heal(seen, primary))
    }

    fn shared_counts(&self) -> Pending<'_, Option<Counts>> {
        Box::pin(self.read_shared_counts_now())
    }

    /// Not guarded: `cache-metrics` reports an unreachable Redis as an error.
    fn shared_stats(&self) -> Pending<'_, anyhow::Result<Option<RedisStats>>> {
        Box::pin(async {
            self.read_stats().await.map(Some).map_err(|e| {
                anyhow::anyhow!(
                    "cannot read metrics from Redis at {}: {}",
                    self.url.target(),
                    crate::error_chain::root_cause(&e)
                )
            })
        })
    }
}
