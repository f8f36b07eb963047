//! The Redis backend. Generations live in Redis, shared by every process, and every
//! entry's key holds the generation it was loaded at: a bump retires them all at once,
//! and a late store under a retired generation is never read. Each script touches keys
//! of one hash slot only, so all of this works on a Redis Cluster too (see `keys`).
//! Which deployment (one server, Sentinel, Cluster, TLS) is `redis_link`'s business.
//!
//! Failure policy: every call has a short timeout; after a failure Redis is skipped for
//! a moment (circuit breaker) and requests go to the database. A failure may have eaten
//! an invalidation, so before Redis is trusted again every generation is bumped. A new
//! master (after a failover or a restart) may lack the last bumps: Redis itself retires
//! every generation the first time a script runs on it (see `lua`).
//!
//! Servers keep ready responses in their near-cache and serve them without asking Redis
//! (see `near_lease`). A bump therefore also publishes the new generation, and the
//! writer waits until every server holding a live lease has confirmed it (or its lease
//! has run out) before its write is acknowledged. Hit and miss counts go to Redis
//! through `shared_counts`.

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
use crate::service::cache::backend::{
    CacheBackend, CacheBackendStatus, Fill, Lookup, Pending, RedisStats, RedisStatus,
};
use crate::service::cache::breaker::Health;
use crate::service::cache::keys::{EntryKey, KeySpace, Resource};
use crate::service::cache::lua::{Scripts, initial_generation};
use crate::service::cache::near_lease::{self, NearLease};
use crate::service::cache::shared_counts;

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

    /// The generation this server may serve ready responses of without asking Redis:
    /// `None` unless its lease is live and it hears every new generation.
    fn near_generation_now(&self, resource: Resource) -> Option<u64> {
        // A failure may have eaten an invalidation this server's lease never heard of.
        if self.health.owed() {
            return None;
        }
        self.near.generation(resource)
    }

    /// With `fill_lock`, a miss also tries to take the key's fill lock for that long,
    /// so that one process loads while the others wait for its value.
    async fn read_entry(&self, key: &EntryKey, fill_lock: Option<Duration>) -> Lookup {
        if !self.ready().await {
            return Lookup::Unavailable;
        }
        let Some(generation) = self.current_generation(key.resource).await else {
            return Lookup::Unavailable;
        };
        let entry = key.at(generation);
        let mut conn = self.link.conn();
        let mut invocation = self.scripts.fetch.key(&entry);
        let call = invocation
            .key(key.fill_lock(generation))
            .arg(fill_lock.map_or(0, millis))
            .invoke_async::<(Option<Vec<u8>>, u8)>(&mut conn);
        match self.guarded_entry(&entry, "lookup", call).await {
            Some((Some(value), _)) => Lookup::Hit {
                generation,
                value: Bytes::from(value),
            },
            Some((None, locked)) => Lookup::Miss {
                generation,
                may_fill: fill_lock.is_none() || locked == 1,
            },
            None => Lookup::Unavailable,
        }
    }

    /// The generation of `resource`: known without asking while this server's near
    /// lease is live (every acknowledged bump has reached it), else read from Redis.
    async fn current_generation(&self, resource: Resource) -> Option<u64> {
        if let Some(generation) = self.near.generation(resource).filter(|g| *g > 0) {
            return Some(generation);
        }
        if self.serving.load(Ordering::Acquire) && self.link.may_have_two_masters() {
            // An old Sentinel master answers until it is reconfigured, with what it held
            // before the failover: a server trusts the generation only through its
            // lease, which is renewed on the master the sentinels name.
            return None;
        }
        let mut conn = self.link.conn();
        let mut invocation = self.on_control_keys(&self.scripts.generation, resource);
        let call = invocation
            .arg(initial_generation())
            .invoke_async::<u64>(&mut conn);
        self.guarded("read the generation", call).await
    }

    async fn release_fill_lock_now(&self, key: &EntryKey, generation: u64) {
        let entry = key.at(generation);
        let mut conn = self.link.conn();
        let mut command = redis::cmd("DEL");
        let call = command
            .arg(key.fill_lock(generation))
            .query_async::<()>(&mut conn);
        self.guarded_entry(&entry, "release the fill lock", call)
            .await;
    }

    /// Stores `value` under `generation`. A store under a generation a write has
    /// retired meanwhile is harmless: no reader asks for that key any more.
    async fn write_entry(&self, fill: Fill<'_>) -> bool {
        let (key, generation) = (fill.entry, fill.generation);
        if !self.ready().await {
            return false;
        }
        if self
            .near
            .generation(key.resource)
            .is_some_and(|current| current > generation)
        {
            return false;
        }
        let entry = key.at(generation);
        let mut conn = self.link.conn();
        let mut invocation = self.scripts.store.key(&entry);
        let call = invocation
            .key(key.fill_lock(generation))
            .arg(&fill.value[..])
            .arg(millis(fill.ttl))
            .invoke_async::<i64>(&mut conn);
        self.guarded_entry(&entry, "store", call).await == Some(1)
    }

    /// Retires every entry of `resource`, and returns once every server serving from
    /// its near-cache has confirmed that (or lost its lease). False when Redis could not
    /// be reached: the resync flag then makes sure nothing from before is served by this
    /// process until a later bump succeeds, and the caller must tell the others.
    async fn retire(&self, resource: Resource, cause: Cause<'_>) -> bool {
        if !self.ready().await {
            return false;
        }
        match self.bump_unchecked(resource, cause).await {
            Some(generation) => self.wait_for_acks(generation).await,
            None => false,
        }
    }

    async fn bump_unchecked(&self, resource: Resource, cause: Cause<'_>) -> Option<u64> {
        if self.link.may_have_two_masters() {
            // Never onto a master the sentinels have given up: it would be lost.
            self.guarded("ask the sentinels", self.link.named_master())
                .await?;
        }
        let mut conn = self.link.conn();
        let mut invocation = self.on_control_keys(&self.scripts.bump, resource);
        let call = invocation
            .arg(initial_generation())
            .arg(self.keys.generations_channel())
            .arg(resource.name())
            .arg(self.near.news(cause))
            .invoke_async::<u64>(&mut conn);
        self.guarded("invalidate", call).await
    }

    /// Polls until no live lease lags behind `generation`. Bounded: a server that stops
    /// confirming loses its lease within [`near_lease::LEASE`], and is no longer waited
    /// for; after a master took over, until every lease from before has run out.
    async fn wait_for_acks(&self, generation: u64) -> bool {
        let mut give_up = Instant::now() + near_lease::LEASE + Duration::from_millis(500);
        let mut poll = Duration::from_micros(200);
        loop {
            let mut conn = self.link.conn();
            let mut invocation = self.scripts.pending_acks.key(self.keys.near_registry());
            let call = invocation
                .arg(generation)
                .arg(millis(near_lease::LEASE))
                .invoke_async::<(u64, u64)>(&mut conn);
            let Some((pending, inherited_wait_ms)) =
                self.guarded("confirm an invalidation", call).await
            else {
                return false;
            };
            if pending == 0 && inherited_wait_ms == 0 {
                return true;
            }
            let now = Instant::now();
            give_up = give_up.max(now + Duration::from_millis(inherited_wait_ms + 50));
            if now >= give_up {
                tracing::warn!(
                    pending,
                    "servers did not confirm an invalidation in time; going on without them"
                );
                return true;
            }
            tokio::time::sleep(poll.min(Duration::from_millis(inherited_wait_ms.max(1)))).await;
            poll = (poll * 2).min(Duration::from_millis(20));
        }
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
        Ok(RedisStats { keyspace, shared })
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
            near_lease: self.near.generation(Resource::Properties).is_some(),
            topology: self.link.topology(),
        }
    }

    /// `script` with the KEYS every script that reads a generation takes: `resource`'s
    /// counter, the master that wrote it, and the registry (see `lua`).
    fn on_control_keys<'s>(
        &self,
        script: &'s redis::Script,
        resource: Resource,
    ) -> redis::ScriptInvocation<'s> {
        let mut invocation = script.key(self.keys.generation(resource));
        invocation
            .key(self.keys.master(resource))
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
        for resource in Resource::ALL {
            if self.bump_unchecked(resource, cause).await.is_none() {
                return false;
            }
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
            return self.guarded(operation, call).await;
        }
        let slot = key_slot(entry.as_bytes());
        if self.health.slot_skipped(slot) {
            return None;
        }
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

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
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

    fn status(&self) -> CacheBackendStatus {
        CacheBackendStatus {
            kind: "redis",
            redis: Some(self.redis_status()),
        }
    }

    fn near_generation(&self, resource: Resource) -> Option<u64> {
        self.near_generation_now(resource)
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
        fill_lock: Option<Duration>,
    ) -> Pending<'a, Lookup> {
        Box::pin(self.read_entry(entry, fill_lock))
    }

    fn release_fill_lock<'a>(&'a self, entry: &'a EntryKey, generation: u64) -> Pending<'a, ()> {
        Box::pin(self.release_fill_lock_now(entry, generation))
    }

    fn store<'a>(&'a self, fill: Fill<'a>) -> Pending<'a, bool> {
        Box::pin(self.write_entry(fill))
    }

    fn bump<'a>(&'a self, resource: Resource, cause: Cause<'a>) -> Pending<'a, bool> {
        Box::pin(self.retire(resource, cause))
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
