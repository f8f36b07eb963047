//! The cache: one type over two backends (Redis, in-process), typed keys, stamps.
//!
//! Rules it keeps:
//! - a reader stamps its result with the bump sequence as it stood before it loaded, and
//!   with the tags of what the result depends on (see `tags` and `clock`): a slow
//!   reader's late store is outdated by any write that came meanwhile and could change
//!   it, and is never served;
//! - concurrent misses for one key share one load: within a process by single flight,
//!   across processes (Redis) by a short fill lock per key;
//! - a cache failure never fails a read: it is counted, logged and the value is loaded.

mod backend;
mod breaker;
pub mod clock;
mod entry_calls;
pub mod keys;
mod lua;
pub mod memory;
pub mod near;
pub mod near_lease;
pub mod redis;
mod shared_counts;
pub mod single_flight;
pub mod tags;
pub mod values;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::config::RedisUrl;
use crate::metrics::events::Cause;
use crate::metrics::{CacheKind, Counts, Metrics};
use crate::service::cache::backend::{CacheBackend, Fill, FillClaim, Lookup};
pub use crate::service::cache::backend::{CacheBackendStatus, RedisStats, Watermark};
use crate::service::cache::clock::{Stamp, TagClock};
use crate::service::cache::keys::{CacheKey, EntryKey, KeySpace};
use crate::service::cache::memory::MemoryCache;
pub use crate::service::cache::near::Kept;
use crate::service::cache::near::NearCache;
use crate::service::cache::redis::RedisCache;
use crate::service::cache::single_flight::SingleFlight;
use crate::service::cache::tags::TagSet;
use crate::service::cache::values::CacheValue;
use crate::service::wal::{ReadFloor, WalPosition};
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
pub(super) const FILL_LOCK_TTL: Duration = Duration::from_secs(2);
/// How long a process waits for another's load before loading itself; longer than the
/// lock so an abandoned lock has expired by then.
const FILL_WAIT: Duration = Duration::from_millis(2500);
/// How often a waiting process looks for the value.
const FILL_POLL: Duration = Duration::from_millis(10);

tokio::task_local! {
    /// Set while a view loads, with a cache other processes fill too (Redis).
    static VIEW_LOAD: Arc<ViewLoad>;
}

/// What a view's load shares with the data loads inside it.
#[derive(Default)]
struct ViewLoad {
    /// For the holder of a retired view's fill lock: what its load is stamped with. A
    /// view depends on what its data does, so the write that retired the view retired
    /// its data too, unless a load stored it again since (0.2 % of such misses in
    /// `bench/mix`). The data is then loaded without being looked up: with Redis, the
    /// lookup of a retired entry costs a round trip or two. The data's stamp is the
    /// view's, taken before either load: a write after it retires both.
    retired_seq: Option<u64>,
    /// The data entries loaded for the view, stored in the round trip that stores it.
    deferred: std::sync::Mutex<Vec<EntryStore>>,
}

impl ViewLoad {
    fn defer(&self, store: EntryStore) {
        self.deferred
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(store);
    }

    fn take_deferred(&self) -> Vec<EntryStore> {
        std::mem::take(
            &mut self
                .deferred
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

/// A value to store in its entry, and the fill lock its store releases (a data entry
/// loaded inside a view's load waits for the view's). Dropped unstored (the request
/// abandoned), the lock is released.
struct EntryStore {
    entry: EntryKey,
    stamp: Stamp,
    value: Bytes,
    ttl: Duration,
    lock: FillLock,
}

pub struct Cache {
    backend: Arc<dyn CacheBackend>,
    keys: KeySpace,
    metrics: Arc<Metrics>,
    flights: SingleFlight,
    #[cfg(feature = "test-hooks")]
    hooks: Arc<TestHooks>,
    near: NearCache,
    /// Loads may read from replicas: each one reads the watermark first.
    replica_floors: bool,
}

/// Whether a value came from the cache or was loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheStatus {
    Hit,
    Miss,
}

/// A value from [`Cache::fetch`], with its stamp (`None` when the cache could not say
/// when it was loaded: it was unavailable) and its tags.
pub struct Fetched<V> {
    pub value: V,
    pub status: CacheStatus,
    pub stamp: Option<Stamp>,
    pub tags: TagSet,
}

impl Cache {
    /// A cache in this process, holding at most `sizes.cache` bytes of data and pages,
    /// and `sizes.near` of ready responses.
    pub fn in_process(keys: KeySpace, sizes: Sizes, metrics: Arc<Metrics>) -> Cache {
        let backend = Arc::new(MemoryCache::new(sizes.cache));
        Cache::with_backend(backend, keys, sizes, metrics)
    }

    pub fn redis(
        url: &RedisUrl,
        keys: KeySpace,
        sizes: Sizes,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Cache> {
        let backend = Arc::new(RedisCache::new(url, keys.clone(), metrics.clone())?);
        Ok(Cache::with_backend(backend, keys, sizes, metrics))
    }

    fn with_backend(
        backend: Arc<dyn CacheBackend>,
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
            replica_floors: false,
        }
    }

    /// Every load is told how far a replica must have replayed to serve it.
    pub fn with_replica_floors(self) -> Cache {
        Cache {
            replica_floors: true,
            ..self
        }
    }

    /// The clock that says which ready responses this process may serve from its memory
    /// without asking anyone: in process, its own; with Redis, the mirror its near-cache
    /// lease keeps, if the lease is live.
    fn near_clock(&self) -> Option<&TagClock> {
        self.backend.near_clock()
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
    /// a current one. Counts a view hit.
    pub fn near_get(&self, key: &str) -> Option<Arc<Kept>> {
        let kept = self.near.get(key, self.near_clock()?)?;
        self.metrics.record_hit(CacheKind::View);
        Some(kept)
    }

    /// The sequence of the ready response this process kept for `key`, if a write has
    /// retired it since.
    fn near_retired_seq(&self, key: &str) -> Option<u64> {
        self.near.retired_seq(key, self.near_clock()?)
    }

    /// Keeps a ready response rendered (or found) with `stamp`, unless a write has
    /// retired it meanwhile.
    pub fn near_store(&self, key: &str, stamp: &Stamp, view: Arc<ReadyView>) {
        if self
            .near_clock()
            .is_some_and(|clock| clock.is_current(stamp))
        {
            self.near.insert(key, stamp.clone(), view);
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

    /// Cache-aside: the cached value, or `load`'s (with the tags of what it depends on),
    /// stored for `ttl` unless a write retired it meanwhile, with its stamp and tags. An
    /// `Err` from `load` is returned and not stored.
    ///
    /// `load` is told where it may read: the watermark is read after the stamp's
    /// sequence, so a replica that replayed up to it holds every write bumped at or
    /// before the stamp, and later ones outdate the stamp.
    pub async fn fetch<K, E, F, Fut>(
        &self,
        key: &K,
        ttl: Duration,
        load: F,
    ) -> Result<Fetched<K::Value>, E>
    where
        K: CacheKey,
        F: FnOnce(ReadFloor) -> Fut,
        Fut: Future<Output = Result<(K::Value, TagSet), E>>,
    {
        let entry = self.keys.entry(key);
        let of_view = match K::KIND {
            CacheKind::View => None,
            _ => VIEW_LOAD.try_with(Arc::clone).ok(),
        };
        let of_retired_view = of_view.as_ref().and_then(|view| view.retired_seq);
        // Where other processes fill the cache too, a miss asks for the fill lock at
        // once; holding it, this caller loads at once, and others in this process wait
        // for its load (below) as for any loader of theirs.
        let shared = self.backend.shares_fills();
        let (seq, locked, retired, _flight) = if let Some(seq) = of_retired_view {
            // Its view's fill lock keeps the herd out.
            (seq, false, false, None)
        } else {
            let claim = shared.then(|| FillClaim {
                ttl: FILL_LOCK_TTL,
                retired_seen: key.near_key().and_then(|near| self.near_retired_seq(near)),
            });
            match self.lookup::<K::Value>(&entry, claim).await {
                Found::Value { value, stamp } => return Ok(self.hit(K::KIND, value, stamp)),
                Found::Unavailable => return self.load_uncached(K::KIND, load).await,
                Found::Nothing {
                    seq,
                    may_fill: true,
                    retired,
                } if shared => (seq, true, retired, self.flights.try_lock(entry.as_str())),
                Found::Nothing { .. } => {
                    // One loader per key in this process; the others wait for it.
                    let (flight, waited) = self.flights.lock(entry.as_str()).await;
                    // Across processes, the fill lock: wait while another process loads.
                    let give_up_waiting = Instant::now() + FILL_WAIT;
                    let (seq, locked, retired) = loop {
                        let claim = FillClaim {
                            ttl: FILL_LOCK_TTL,
                            retired_seen: None,
                        };
                        match self.lookup::<K::Value>(&entry, Some(claim)).await {
                            Found::Value { value, stamp } => {
                                return Ok(self.hit(K::KIND, value, stamp));
                            }
                            Found::Unavailable => {
                                return self.load_uncached(K::KIND, load).await;
                            }
                            Found::Nothing {
                                may_fill: false, ..
                            } if Instant::now() < give_up_waiting => {
                                tokio::time::sleep(FILL_POLL).await;
                            }
                            Found::Nothing {
                                seq,
                                may_fill,
                                retired,
                            } => break (seq, may_fill, retired),
                        }
                    };
                    // After waiting for a loader that stored nothing: load alongside the
                    // other waiters.
                    (seq, locked, retired, (!waited).then_some(flight))
                }
            }
        };
        let lock = FillLock {
            held: locked.then(|| (self.backend.clone(), entry.clone())),
        };
        // A whole response's load reads the data level, not the database.
        let floor = match K::KIND {
            CacheKind::View => ReadFloor::PrimaryOnly,
            _ => self.read_floor().await,
        };
        // Only the holder of the view's lock: a request that gave up waiting for it loads
        // beside others, and their data's lock still lets one of them load it.
        let (loaded, deferred) = match K::KIND {
            CacheKind::View if shared => {
                let view = Arc::new(ViewLoad {
                    retired_seq: (retired && locked).then_some(seq),
                    ..ViewLoad::default()
                });
                let loaded = VIEW_LOAD.scope(view.clone(), load(floor)).await;
                (loaded, view.take_deferred())
            }
            _ => (load(floor).await, Vec::new()),
        };
        let (value, tags) = match loaded {
            Ok(loaded) => loaded,
            Err(e) => {
                self.store(deferred).await;
                lock.release_now().await;
                return Err(e);
            }
        };
        pause!(self.hooks, BeforeCacheStore);
        let stored = value.encode();
        let stamp = Stamp { seq, tags };
        let this = EntryStore {
            entry,
            stamp: stamp.clone(),
            value: stored.clone(),
            ttl,
            lock,
        };
        match of_view {
            // Stored with its view, in one round trip.
            Some(view) => view.defer(this),
            None => {
                self.store(std::iter::once(this).chain(deferred).collect())
                    .await
            }
        }
        self.metrics.record_miss(K::KIND);
        Ok(Fetched {
            value: value.kept_as(stored),
            status: CacheStatus::Miss,
            tags: stamp.tags.clone(),
            stamp: Some(stamp),
        })
    }

    /// Stores `value` again, in place of what a load stamped `stamp` stored (a variant
    /// made afterwards), unless a write retired it meanwhile (with Redis, also unless a
    /// later load replaced it).
    pub async fn restore<K: CacheKey>(
        &self,
        key: &K,
        stamp: Stamp,
        value: &K::Value,
        ttl: Duration,
    ) {
        let entry = self.keys.entry(key);
        let store = EntryStore {
            entry,
            stamp,
            value: value.encode(),
            ttl,
            lock: FillLock { held: None },
        };
        self.store(vec![store]).await;
    }

    /// Retires every cached entry that shares a tag with `tags` (what a committed write
    /// changed), and records why (the dashboard's markers; with Redis, the other servers
    /// hear it too); false when that could not reach the cache. This process then serves
    /// nothing cached until it can retire it, but other processes sharing the cache do not
    /// know: the caller must tell them.
    pub async fn invalidate(&self, tags: &TagSet, cause: Cause<'_>) -> bool {
        self.invalidate_written(tags, cause, None).await
    }

    /// [`Cache::invalidate`] for a write whose commit is at `written_at` in the WAL
    /// (`None`: not known), which raises the replicas' watermark before it returns.
    pub async fn invalidate_written(
        &self,
        tags: &TagSet,
        cause: Cause<'_>,
        written_at: Option<WalPosition>,
    ) -> bool {
        self.metrics.record_invalidation(cause);
        self.backend.bump(tags, cause, written_at).await
    }

    /// Where a load may read now (see [`Cache::fetch`]).
    async fn read_floor(&self) -> ReadFloor {
        if !self.replica_floors {
            return ReadFloor::PrimaryOnly;
        }
        match self.backend.watermark().await {
            Some(Watermark {
                known: Some(position),
                ..
            }) => ReadFloor::Replayed(position),
            _ => ReadFloor::PrimaryOnly,
        }
    }

    /// The replicas' watermark, for the task that heals it (see `BUMP` in `lua`).
    pub async fn watermark(&self) -> Option<Watermark> {
        self.backend.watermark().await
    }

    pub async fn heal_watermark(&self, seen: &Watermark, primary: WalPosition) -> bool {
        self.backend.heal_watermark(seen, primary).await
    }

    /// Everything, recorded as one invalidation.
    pub async fn invalidate_everything(&self, cause: Cause<'_>) -> bool {
        self.invalidate(&TagSet::all(), cause).await
    }

    fn hit<V>(&self, kind: CacheKind, value: V, stamp: Stamp) -> Fetched<V> {
        self.metrics.record_hit(kind);
        Fetched {
            value,
            status: CacheStatus::Hit,
            tags: stamp.tags.clone(),
            stamp: Some(stamp),
        }
    }

    /// Without the cache there is no watermark: the primary.
    async fn load_uncached<V, E, F, Fut>(&self, kind: CacheKind, load: F) -> Result<Fetched<V>, E>
    where
        F: FnOnce(ReadFloor) -> Fut,
        Fut: Future<Output = Result<(V, TagSet), E>>,
    {
        self.metrics.record_miss(kind);
        let (value, tags) = load(ReadFloor::PrimaryOnly).await?;
        Ok(Fetched {
            value,
            status: CacheStatus::Miss,
            stamp: None,
            tags,
        })
    }

    /// With `fill_lock`, a miss also says whether this caller may load (see
    /// `FILL_LOCK_TTL`).
    async fn lookup<V: CacheValue>(
        &self,
        entry: &EntryKey,
        fill_lock: Option<FillClaim>,
    ) -> Found<V> {
        let (value, stamp) = match self.backend.lookup(entry, fill_lock).await {
            Lookup::Hit { value, stamp } => (value, stamp),
            Lookup::Miss {
                seq,
                may_fill,
                retired,
            } => {
                return Found::Nothing {
                    seq,
                    may_fill,
                    retired,
                };
            }
            Lookup::Unavailable => return Found::Unavailable,
        };
        match V::decode(value) {
            Some(value) => Found::Value { value, stamp },
            None => {
                tracing::warn!(key = %entry, "cached value does not decode; reloading it");
                // Its stamp is no later than the current sequence: a safe one to load under.
                Found::Nothing {
                    seq: stamp.seq,
                    may_fill: true,
                    retired: false,
                }
            }
        }
    }

    /// Stores each value, in one round trip where the backend can; each store releases
    /// its fill lock, which until then dropping the request did.
    async fn store(&self, stores: Vec<EntryStore>) {
        if stores.is_empty() {
            return;
        }
        let fills = stores
            .iter()
            .map(|store| Fill {
                entry: &store.entry,
                stamp: store.stamp.clone(),
                value: store.value.clone(),
                ttl: store.ttl,
            })
            .collect();
        let stored = self.backend.store_all(fills).await;
        for (store, stored) in stores.into_iter().zip(stored) {
            if !stored {
                tracing::debug!(key = %store.entry, "not cached: a write retired it meanwhile, or the cache is unavailable");
            }
            store.lock.forget();
        }
    }
}

/// A fill lock this caller holds in the shared cache. If its load is abandoned (the
/// request's future dropped midway) the lock is released at once rather than left to
/// run out: every other process and request would otherwise wait out its TTL.
struct FillLock {
    held: Option<(Arc<dyn CacheBackend>, EntryKey)>,
}

impl FillLock {
    /// The load failed: let the others load.
    async fn release_now(mut self) {
        if let Some((backend, entry)) = &self.held {
            backend.release_fill_lock(entry).await;
        }
        // Dropped before this, the guard still releases it.
        self.held = None;
    }

    /// Whatever comes next releases the lock itself.
    fn forget(mut self) {
        self.held = None;
    }
}

impl Drop for FillLock {
    fn drop(&mut self) {
        if let Some((backend, entry)) = self.held.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move { backend.release_fill_lock(&entry).await });
        }
    }
}

enum Found<V> {
    Value {
        value: V,
        stamp: Stamp,
    },
    /// `seq`: what a load now is stamped with. `may_fill`: this caller may load now.
    /// `retired`: a write retired the value that stood there.
    Nothing {
        seq: u64,
        may_fill: bool,
        retired: bool,
    },
    Unavailable,
}
