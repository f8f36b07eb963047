//! The Redis backend. Generations live in Redis, shared by every process; lookups and
//! guarded stores are Lua scripts, so "read the generation, then the entry" and "store
//! only if the generation is unchanged" are each one atomic round trip.
//!
//! Failure policy: every call has a short timeout; after a failure Redis is skipped for
//! a moment (circuit breaker) and requests go to the database. A failure may have eaten
//! an invalidation, so before Redis is trusted again every generation is bumped.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisResult, Script};

use crate::cache::keys::{EntryKey, KeySpace, Resource};
use crate::config::RedisUrl;
use crate::logging::{Failure, log_limited};
use crate::metrics::{CacheKind, HitsMisses, Metrics};

/// A dead Redis must cost milliseconds, not seconds.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);
/// How long Redis is skipped after a failure.
const BREAKER_OPEN_FOR: Duration = Duration::from_secs(1);

/// KEYS: generation, hits counter. ARGV: entry head, entry tail, initial generation,
/// lease ms (0: ask for none). Returns {generation, value or nil, 1 if the caller now
/// holds the key's load lease}. A miss with a lease held by someone else returns 0.
const LOOKUP: &str = r"
local g = redis.call('GET', KEYS[1])
if not g then
  redis.call('SET', KEYS[1], ARGV[3], 'NX')
  g = redis.call('GET', KEYS[1])
end
local key = ARGV[1] .. g .. ARGV[2]
local v = redis.call('GET', key)
if v then
  redis.call('INCR', KEYS[2])
  return {g, v, 0}
end
if ARGV[4] ~= '0' and redis.call('SET', key .. ':lease', '1', 'NX', 'PX', ARGV[4]) then
  return {g, false, 1}
end
return {g, false, 0}
";

/// KEYS: generation, misses counter. ARGV: expected generation, entry key, value, ttl ms.
/// Counts the miss, stores only if the generation is still the expected one, and ends
/// the key's load lease either way.
const STORE_IF_CURRENT: &str = r"
redis.call('INCR', KEYS[2])
local stored = 0
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', ARGV[2], ARGV[3], 'PX', ARGV[4])
  stored = 1
end
redis.call('DEL', ARGV[2] .. ':lease')
return stored
";

/// KEYS: generation. ARGV: initial generation. A lost counter restarts from the clock,
/// above any generation used before, so entries from before the loss stay retired.
const BUMP: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('INCR', KEYS[1]) end
redis.call('SET', KEYS[1], ARGV[1])
return tonumber(ARGV[1])
";

pub struct RedisCache {
    conn: ConnectionManager,
    url: RedisUrl,
    keys: KeySpace,
    metrics: Arc<Metrics>,
    lookup: Script,
    store_if_current: Script,
    bump: Script,
    health: Health,
}

#[derive(Default)]
struct Health {
    skip_until: Mutex<Option<Instant>>,
    /// Counts failures: any of them may have eaten an invalidation, so nothing cached
    /// may be served until every generation has been bumped after it.
    failures: AtomicU64,
    /// The failure count as of the start of the last completed resync. A failure that
    /// happens during a resync stays owed, since the bumps may have preceded it.
    resynced_through: AtomicU64,
}

/// Outcome of a lookup.
pub enum Lookup {
    Hit {
        generation: u64,
        value: Bytes,
    },
    /// `leased`: this caller holds the key's load lease (or asked for none).
    Miss {
        generation: u64,
        leased: bool,
    },
    /// Redis is failing or not yet trusted again: go to the database.
    Unavailable,
}

impl RedisCache {
    /// Connects lazily: an unreachable Redis never stops the caller.
    pub fn new(
        url: &RedisUrl,
        keys: KeySpace,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<RedisCache> {
        let client = redis::Client::open(url.expose())?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(RedisCache {
            conn,
            url: url.clone(),
            keys,
            metrics,
            lookup: Script::new(LOOKUP),
            store_if_current: Script::new(STORE_IF_CURRENT),
            bump: Script::new(BUMP),
            health: Health::default(),
        })
    }

    pub fn url(&self) -> &RedisUrl {
        &self.url
    }

    /// Counts a hit in Redis when there is one; misses are counted by the store. With
    /// `lease`, a miss also tries to take the key's load lease for that long, so that
    /// one process loads while the others wait for its value.
    pub async fn lookup(&self, key: &EntryKey, kind: CacheKind, lease: Option<Duration>) -> Lookup {
        if !self.ready().await {
            return Lookup::Unavailable;
        }
        let mut conn = self.conn.clone();
        let mut invocation = self.lookup.key(self.keys.generation(key.resource));
        let call = invocation
            .key(self.keys.hits(kind))
            .arg(&key.head)
            .arg(&key.tail)
            .arg(initial_generation())
            .arg(lease.map_or(0, millis))
            .invoke_async::<(u64, Option<Vec<u8>>, u8)>(&mut conn);
        match self.guarded("lookup", call).await {
            Some((generation, Some(value), _)) => Lookup::Hit {
                generation,
                value: Bytes::from(value),
            },
            Some((generation, None, leased)) => Lookup::Miss {
                generation,
                leased: lease.is_none() || leased == 1,
            },
            None => Lookup::Unavailable,
        }
    }

    /// Ends a load lease early (the load failed), so others need not wait it out.
    pub async fn release_lease(&self, key: &EntryKey, generation: u64) {
        let mut conn = self.conn.clone();
        let lease_key = format!("{}:lease", key.at(generation));
        let mut command = redis::cmd("DEL");
        let call = command.arg(lease_key).query_async::<()>(&mut conn);
        self.guarded("release lease", call).await;
    }

    /// Counts the miss and stores `value` if `generation` is still current.
    pub async fn store_if_current(
        &self,
        key: &EntryKey,
        kind: CacheKind,
        generation: u64,
        value: &[u8],
        ttl: Duration,
    ) -> bool {
        if !self.ready().await {
            return false;
        }
        let mut conn = self.conn.clone();
        let mut invocation = self
            .store_if_current
            .key(self.keys.generation(key.resource));
        let call = invocation
            .key(self.keys.misses(kind))
            .arg(generation)
            .arg(key.at(generation))
            .arg(value)
            .arg(millis(ttl))
            .invoke_async::<i64>(&mut conn);
        self.guarded("store", call).await == Some(1)
    }

    /// Retires every entry of `resource`. On failure the resync flag makes sure nothing
    /// from before is served until a later bump succeeds.
    pub async fn bump(&self, resource: Resource) -> bool {
        if !self.ready().await {
            return false;
        }
        self.bump_unchecked(resource).await
    }

    async fn bump_unchecked(&self, resource: Resource) -> bool {
        let mut conn = self.conn.clone();
        let mut invocation = self.bump.key(self.keys.generation(resource));
        let call = invocation
            .arg(initial_generation())
            .invoke_async::<u64>(&mut conn);
        self.guarded("invalidate", call).await.is_some()
    }

    /// Redis server-wide keyspace hits and misses, and the service's shared counters.
    /// Not guarded: `cache-metrics` reports an unreachable Redis as an error.
    pub async fn stats(&self) -> RedisResult<RedisStats> {
        let mut conn = self.conn.clone();
        let info: redis::InfoDict = redis::cmd("INFO")
            .arg("stats")
            .query_async(&mut conn)
            .await?;
        let mut counter_keys = Vec::new();
        for kind in CacheKind::ALL {
            counter_keys.push(self.keys.hits(kind));
            counter_keys.push(self.keys.misses(kind));
        }
        let counts: Vec<Option<u64>> = redis::cmd("MGET")
            .arg(&counter_keys)
            .query_async(&mut conn)
            .await?;
        let per_kind = CacheKind::ALL
            .iter()
            .zip(counts.chunks(2))
            .map(|(kind, pair)| {
                let at = |i: usize| pair.get(i).copied().flatten().unwrap_or_default();
                (
                    *kind,
                    HitsMisses {
                        hits: at(0),
                        misses: at(1),
                    },
                )
            })
            .collect();
        Ok(RedisStats {
            keyspace: HitsMisses {
                hits: info.get("keyspace_hits").unwrap_or_default(),
                misses: info.get("keyspace_misses").unwrap_or_default(),
            },
            per_kind,
        })
    }

    /// False while the breaker is open, or while a resync is owed and cannot be paid.
    async fn ready(&self) -> bool {
        if self.skipping() {
            return false;
        }
        let failures = self.health.failures.load(Ordering::Acquire);
        if self.health.resynced_through.load(Ordering::Acquire) >= failures {
            return true;
        }
        for resource in Resource::ALL {
            if !self.bump_unchecked(resource).await {
                return false;
            }
        }
        if self
            .health
            .resynced_through
            .fetch_max(failures, Ordering::AcqRel)
            < failures
        {
            tracing::info!(redis = %self.url, "Redis answers again: retired everything cached before the failure");
        }
        self.health.resynced_through.load(Ordering::Acquire)
            >= self.health.failures.load(Ordering::Acquire)
    }

    fn skipping(&self) -> bool {
        let skip_until = self
            .health
            .skip_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        skip_until.is_some_and(|until| Instant::now() < until)
    }

    /// Runs one Redis call with a hard deadline; a failure opens the breaker.
    async fn guarded<T>(
        &self,
        operation: &str,
        call: impl Future<Output = RedisResult<T>>,
    ) -> Option<T> {
        // The first call of a connection also connects and may load the script.
        let error = match tokio::time::timeout(CONNECT_TIMEOUT + RESPONSE_TIMEOUT, call).await {
            Ok(Ok(value)) => return Some(value),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "timed out".to_owned(),
        };
        self.metrics.record_cache_error();
        self.health.failures.fetch_add(1, Ordering::AcqRel);
        *self
            .health
            .skip_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now() + BREAKER_OPEN_FOR);
        log_limited!(warn, Failure::Cache, redis = %self.url, %error, "cache {operation} failed; serving from the database");
        None
    }
}

pub struct RedisStats {
    pub keyspace: HitsMisses,
    pub per_kind: Vec<(CacheKind, HitsMisses)>,
}

impl RedisStats {
    pub fn count(&self, kind: CacheKind) -> HitsMisses {
        self.per_kind
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, c)| *c)
            .unwrap_or_default()
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Microseconds since the epoch: above every generation a lost counter could have had.
fn initial_generation() -> u64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since_epoch.as_micros()).unwrap_or(u64::MAX / 2)
}
