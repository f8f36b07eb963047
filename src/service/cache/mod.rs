//! The cache: one type over two backends (Redis, in-process), typed keys, generations.
//!
//! Rules it keeps:
//! - a reader stores its result under the generation it started under, and only if
//!   that generation is still current: a slow reader's late store can never be read
//!   after an invalidation (its key is retired), and is not even written;
//! - concurrent misses for one key share one load: within a process by single flight,
//!   across processes (Redis) by a short fill lock per key;
//! - a cache failure never fails a read: it is counted, logged and the value is loaded.

mod backend;
mod breaker;
pub mod keys;
mod lua;
pub mod memory;
pub mod near;
pub mod near_lease;
pub mod redis;
mod shared_counts;
pub mod single_flight;
pub mod values;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::config::RedisUrl;
use crate::metrics::events::Cause;
use crate::metrics::{CacheKind, Counts, Metrics};
use crate::service::cache::backend::{CacheBackend, Fill, Lookup};
pub use crate::service::cache::backend::{CacheBackendStatus, RedisStats};
use crate::service::cache::keys::{CacheKey, EntryKey, KeySpace, Resource};
use crate::service::cache::memory::MemoryCache;
use crate::service::cache::near::NearCache;
use crate::service::cache::redis::RedisCache;
use crate::service::cache::single_flight::SingleFlight;
use crate::service::cache::values::CacheValue;
#[cfg(feature = "test-hooks")]
use crate::test_hooks::TestHooks;
use crate::test_hooks::pause;
use crate::view::ReadyView;

/// Bounds of the caches held in process.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    /// Bytes of data and pages of the in-process backend.
    pub cache: u64,
    /// Bytes of ready responses in the near-cache.
    pub near: u64,
    /// How long a ready response may stay in the near-cache (the view TTL).
    pub near_ttl: Duration,
}

/// How long a Redis fill lock lasts: a crashed loader blocks others at most this long.
const FILL_LOCK_TTL: Duration = Duration::from_secs(2);
/// How long a process waits for another's load before loading itself; longer than the
/// lock so an abandoned lock has expired by then.
const FILL_WAIT: Duration = Duration::from_millis(2500);
/// How often a waiting process looks for the value.
const FILL_POLL: Duration = Duration::from_millis(10);

pub struct Cache {
    backend: Box<dyn CacheBackend>,
    keys: KeySpace,
    metrics: Arc<Metrics>,
    flights: SingleFlight,
    #[cfg(feature = "test-hooks")]
    hooks: Arc<TestHooks>,
    near: NearCache,
}

/// Whether a value came from the cache or was loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheStatus {
    Hit,
    Miss,
}

/// A value from [`Cache::fetch`], with the generation it belongs to (`None` when the
/// cache could not say: it was unavailable).
pub struct Fetched<V> {
    pub value: V,
    pub status: CacheStatus,
    pub generation: Option<u64>,
}

impl Cache {
    /// A cache in this process, holding at most `sizes.cache` bytes of data and pages,
    /// and `sizes.near` of ready responses.
    pub fn in_process(keys: KeySpace, sizes: Sizes, metrics: Arc<Metrics>) -> Cache {
        let backend = Box::new(MemoryCache::new(sizes.cache));
        Cache::with_backend(backend, keys, sizes, metrics)
    }

    pub fn redis(
        url: &RedisUrl,
        keys: KeySpace,
        sizes: Sizes,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Cache> {
        let backend = Box::new(RedisCache::new(url, keys.clone(), metrics.clone())?);
        Ok(Cache::with_backend(backend, keys, sizes, metrics))
    }

    fn with_backend(
        backend: Box<dyn CacheBackend>,
        keys: KeySpace,
        sizes: Sizes,
        metrics: Arc<Metrics>,
    ) -> Cache {
        Cache {
            backend,
            keys,
            metrics,
            flights: SingleFlight::default(),
            #[cfg(feature = "test-hooks")]
            hooks: Arc::new(TestHooks::new()),
            near: NearCache::new(sizes.near, sizes.near_ttl),
        }
    }

    /// The generation whose ready responses this process may serve from its memory
    /// without asking anyone: in process, the current one; with Redis, the one its
    /// near-cache lease vouches for, if the lease is live.
    fn near_generation(&self, resource: Resource) -> Option<u64> {
        self.backend.near_generation(resource)
    }

    /// A server's background work: with Redis, the near-cache lease and the flushing
    /// of counts to the shared counters. Nothing in process.
    pub fn start_server_tasks(&self) {
        self.backend.start_server_tasks(
            #[cfg(feature = "test-hooks")]
            self.hooks.clone(),
        );
    }

    /// A command's counts, added to the shared ones before it exits (Redis only).
    pub async fn flush_counts(&self) {
        self.backend.flush_counts().await;
    }

    /// The ready response for the view `key` (a normalized URL), if this process holds
    /// one of the current generation. Counts a view hit.
    pub fn near_get(&self, resource: Resource, key: &str) -> Option<Arc<ReadyView>> {
        let view = self.near.get(key, self.near_generation(resource)?)?;
        self.metrics.record_hit(CacheKind::View);
        Some(view)
    }

    /// Keeps a ready response rendered (or found) under `generation`, unless a write
    /// has retired that generation meanwhile.
    pub fn near_store(&self, resource: Resource, key: &str, generation: u64, view: Arc<ReadyView>) {
        if self.near_generation(resource) == Some(generation) {
            self.near.insert(key, generation, view);
        }
    }

    /// Pause points for race tests (see `test_hooks`), shared with the database layer.
    #[cfg(feature = "test-hooks")]
    pub fn hooks(&self) -> &Arc<TestHooks> {
        &self.hooks
    }

    /// For the start-up log line; no secrets.
    pub fn describe(&self) -> String {
        self.backend.describe()
    }

    /// Names the cache this process invalidates, for tagging its database writes (see
    /// [`CacheBackend::origin_tag`]).
    pub fn origin_tag(&self) -> String {
        self.backend.origin_tag()
    }

    /// Whether other processes use this cache too (Redis).
    pub fn is_shared(&self) -> bool {
        self.backend.is_shared()
    }

    /// `in-process`, or the Redis backend's state.
    pub fn status(&self) -> CacheBackendStatus {
        self.backend.status()
    }

    /// With Redis, the sums of every process's counters, as last flushed.
    pub async fn shared_counts(&self) -> Option<Counts> {
        self.backend.shared_counts().await
    }

    /// With Redis, the numbers `cache-metrics` reports; `None` in process.
    pub async fn shared_stats(&self) -> anyhow::Result<Option<RedisStats>> {
        self.backend.shared_stats().await
    }

    /// Cache-aside: the cached value, or `load`'s, stored for `ttl` unless a write
    /// bumped the generation meanwhile. An `Err` from `load` is returned and not stored.
    pub async fn get_or_load<K, E, F, Fut>(
        &self,
        key: &K,
        ttl: Duration,
        load: F,
    ) -> Result<(K::Value, CacheStatus), E>
    where
        K: CacheKey,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<K::Value, E>>,
    {
        let fetched = self.fetch(key, ttl, load).await?;
        Ok((fetched.value, fetched.status))
    }

    /// [`Cache::get_or_load`], telling the generation the value belongs to.
    pub async fn fetch<K, E, F, Fut>(
        &self,
        key: &K,
        ttl: Duration,
        load: F,
    ) -> Result<Fetched<K::Value>, E>
    where
        K: CacheKey,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<K::Value, E>>,
    {
        let entry = self.keys.entry(key);
        let generation = match self.lookup::<K::Value>(&entry, None).await {
            Found::Value { value, generation } => return Ok(self.hit(K::KIND, value, generation)),
            Found::Nothing { generation, .. } => generation,
            Found::Unavailable => return self.load_uncached(K::KIND, load).await,
        };
        // One loader per key and generation in this process; the others wait for it.
        let (flight, waited) = self.flights.lock(&entry.at(generation)).await;
        // Across processes, the fill lock: wait while another process loads.
        let give_up_waiting = Instant::now() + FILL_WAIT;
        let (generation, locked) = loop {
            match self.lookup::<K::Value>(&entry, Some(FILL_LOCK_TTL)).await {
                Found::Value { value, generation } => {
                    return Ok(self.hit(K::KIND, value, generation));
                }
                Found::Unavailable => return self.load_uncached(K::KIND, load).await,
                Found::Nothing {
                    may_fill: false, ..
                } if Instant::now() < give_up_waiting => {
                    tokio::time::sleep(FILL_POLL).await;
                }
                Found::Nothing {
                    generation,
                    may_fill,
                } => break (generation, may_fill),
            }
        };
        if waited {
            // The loader we waited for stored nothing: load alongside the other waiters.
            drop(flight);
        }
        let value = match load().await {
            Ok(value) => value,
            Err(e) => {
                if locked {
                    self.backend.release_fill_lock(&entry, generation).await;
                }
                return Err(e);
            }
        };
        pause!(self.hooks, BeforeCacheStore);
        let stored = value.encode();
        self.store(&entry, generation, stored.clone(), ttl).await;
        self.metrics.record_miss(K::KIND);
        Ok(Fetched {
            value: value.kept_as(stored),
            status: CacheStatus::Miss,
            generation: Some(generation),
        })
    }

    /// The cached value if there is one; never loads.
    pub async fn peek<K: CacheKey>(&self, key: &K) -> Option<K::Value> {
        match self.lookup::<K::Value>(&self.keys.entry(key), None).await {
            Found::Value { value, generation } => Some(self.hit(K::KIND, value, generation).value),
            Found::Nothing { .. } | Found::Unavailable => None,
        }
    }

    /// Retires every cached list and page of `resource`, and records why (the
    /// dashboard's markers; with Redis, the other servers hear it too); false when that
    /// could not reach the cache. This process then serves nothing cached until it can
    /// retire it, but other processes sharing the cache do not know: the caller must
    /// tell them.
    pub async fn invalidate(&self, resource: Resource, cause: Cause<'_>) -> bool {
        self.metrics.record_invalidation(cause);
        self.retire(resource, cause).await
    }

    async fn retire(&self, resource: Resource, cause: Cause<'_>) -> bool {
        self.backend.bump(resource, cause).await
    }

    /// Every resource, recorded as one invalidation.
    pub async fn invalidate_everything(&self, cause: Cause<'_>) {
        self.metrics.record_invalidation(cause);
        for resource in Resource::ALL {
            self.retire(resource, cause).await;
        }
    }

    fn hit<V>(&self, kind: CacheKind, value: V, generation: u64) -> Fetched<V> {
        self.metrics.record_hit(kind);
        Fetched {
            value,
            status: CacheStatus::Hit,
            generation: Some(generation),
        }
    }

    async fn load_uncached<V, E, F, Fut>(&self, kind: CacheKind, load: F) -> Result<Fetched<V>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        self.metrics.record_miss(kind);
        Ok(Fetched {
            value: load().await?,
            status: CacheStatus::Miss,
            generation: None,
        })
    }

    /// With `fill_lock`, a miss also says whether this caller may load (see
    /// `FILL_LOCK_TTL`).
    async fn lookup<V: CacheValue>(
        &self,
        entry: &EntryKey,
        fill_lock: Option<Duration>,
    ) -> Found<V> {
        let (generation, bytes, may_fill) = match self.backend.lookup(entry, fill_lock).await {
            Lookup::Hit { generation, value } => (generation, Some(value), true),
            Lookup::Miss {
                generation,
                may_fill,
            } => (generation, None, may_fill),
            Lookup::Unavailable => return Found::Unavailable,
        };
        match bytes.map(V::decode) {
            Some(Some(value)) => Found::Value { value, generation },
            Some(None) => {
                tracing::warn!(key = %entry.at(generation), "cached value does not decode; reloading it");
                Found::Nothing {
                    generation,
                    may_fill,
                }
            }
            None => Found::Nothing {
                generation,
                may_fill,
            },
        }
    }

    async fn store(&self, entry: &EntryKey, generation: u64, value: Bytes, ttl: Duration) {
        let fill = Fill {
            entry,
            generation,
            value,
            ttl,
        };
        let stored = self.backend.store(fill).await;
        if !stored {
            tracing::debug!(key = %entry.at(generation), "not cached: a write retired this generation, or the cache is unavailable");
        }
    }
}

enum Found<V> {
    Value {
        value: V,
        generation: u64,
    },
    /// `may_fill`: this caller may load now.
    Nothing {
        generation: u64,
        may_fill: bool,
    },
    Unavailable,
}
