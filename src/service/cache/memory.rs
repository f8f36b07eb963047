//! The in-process cache of the embedded mode: a moka cache bounded in bytes (keys and
//! values), with per-entry expiry and its own eviction, plus one generation counter per
//! resource. Entries are keyed by generation, so a bump retires every entry at once;
//! retired ones are unreachable and leave by eviction or expiry.
//!
//! "Store only if the generation is unchanged" needs no lock: a store that loses the
//! race with a bump lands under the retired generation, where no lookup looks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use moka::Expiry;
use moka::sync::Cache;

use crate::metrics::events::Cause;
use crate::service::cache::backend::{CacheBackend, CacheBackendStatus, Fill, Lookup, Pending};
use crate::service::cache::keys::{EntryKey, Resource};

/// Per-entry bookkeeping moka keeps besides the bytes, for the weigher.
const ENTRY_OVERHEAD_BYTES: usize = 64;

pub struct MemoryCache {
    generations: [AtomicU64; Resource::ALL.len()],
    entries: Cache<String, Entry>,
}

#[derive(Clone)]
struct Entry {
    value: Bytes,
    ttl: Duration,
}

struct EntryTtl;

impl Expiry<String, Entry> for EntryTtl {
    fn expire_after_create(&self, _key: &String, entry: &Entry, _now: Instant) -> Option<Duration> {
        Some(entry.ttl)
    }
}

impl MemoryCache {
    /// A cache holding at most `max_bytes` of keys and values.
    pub fn new(max_bytes: u64) -> MemoryCache {
        let entries = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|key: &String, entry: &Entry| {
                u32::try_from(key.len() + entry.value.len() + ENTRY_OVERHEAD_BYTES)
                    .unwrap_or(u32::MAX)
            })
            .expire_after(EntryTtl)
            .build();
        MemoryCache {
            generations: std::array::from_fn(|_| AtomicU64::new(0)),
            entries,
        }
    }

    /// The current generation of `resource`.
    fn generation_of(&self, resource: Resource) -> u64 {
        self.generations[resource as usize].load(Ordering::Acquire)
    }

    /// The current generation and, when present and fresh, the entry stored under it.
    fn get_current(&self, key: &EntryKey) -> (u64, Option<Bytes>) {
        let generation = self.generation_of(key.resource);
        let value = self
            .entries
            .get(&key.at(generation))
            .map(|entry| entry.value);
        (generation, value)
    }

    /// Stores only if no write bumped the generation since the caller's lookup.
    fn store_if_current(
        &self,
        key: &EntryKey,
        generation: u64,
        value: Bytes,
        ttl: Duration,
    ) -> bool {
        if self.generation_of(key.resource) != generation {
            return false;
        }
        self.entries
            .insert(key.at(generation), Entry { value, ttl });
        true
    }

    /// Retires every entry of `resource`.
    fn bump_generation(&self, resource: Resource) -> u64 {
        self.generations[resource as usize].fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Bytes held (keys, values and bookkeeping), after pending evictions.
    #[cfg(test)]
    fn weighted_size(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.weighted_size()
    }
}

/// Single flight already keeps one loader per key in the process: no fill lock.
impl CacheBackend for MemoryCache {
    fn describe(&self) -> String {
        "in-process".to_owned()
    }

    /// In-process caches are never shared.
    fn origin_tag(&self) -> String {
        "local".to_owned()
    }

    fn is_shared(&self) -> bool {
        false
    }

    fn status(&self) -> CacheBackendStatus {
        CacheBackendStatus {
            kind: "in-process",
            redis: None,
        }
    }

    /// Always the current one: every bump happens in this process.
    fn near_generation(&self, resource: Resource) -> Option<u64> {
        Some(self.generation_of(resource))
    }

    fn lookup<'a>(
        &'a self,
        entry: &'a EntryKey,
        _fill_lock: Option<Duration>,
    ) -> Pending<'a, Lookup> {
        let (generation, value) = self.get_current(entry);
        let found = match value {
            Some(value) => Lookup::Hit { generation, value },
            None => Lookup::Miss {
                generation,
                may_fill: true,
            },
        };
        Box::pin(std::future::ready(found))
    }

    fn store<'a>(&'a self, fill: Fill<'a>) -> Pending<'a, bool> {
        let stored = self.store_if_current(fill.entry, fill.generation, fill.value, fill.ttl);
        Box::pin(std::future::ready(stored))
    }

    fn bump<'a>(&'a self, resource: Resource, _cause: Cause<'a>) -> Pending<'a, bool> {
        self.bump_generation(resource);
        Box::pin(std::future::ready(true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::cache::keys::{AllPropertiesKey, KeySpace, PropertyKey};

    const TTL: Duration = Duration::from_secs(60);

    #[test]
    fn a_bump_refuses_stores_begun_before_it() {
        let cache = MemoryCache::new(1 << 20);
        let keys = KeySpace::new("t:");
        let entry = keys.entry(&AllPropertiesKey);
        let (generation, value) = cache.get_current(&entry);
        assert_eq!(value, None);
        cache.bump_generation(Resource::Properties);
        assert!(!cache.store_if_current(&entry, generation, Bytes::from_static(b"old"), TTL));
        let (generation, _) = cache.get_current(&entry);
        assert!(cache.store_if_current(&entry, generation, Bytes::from_static(b"new"), TTL));
        assert_eq!(
            cache.get_current(&entry).1,
            Some(Bytes::from_static(b"new"))
        );
        cache.bump_generation(Resource::Properties);
        assert_eq!(cache.get_current(&entry).1, None, "retired by the bump");
    }

    #[test]
    fn the_byte_bound_holds_and_new_entries_still_fit() {
        let bound = 64 * 1024;
        let cache = MemoryCache::new(bound);
        let keys = KeySpace::new("t:");
        let value = Bytes::from(vec![b'x'; 1000]);
        for id in 0..1000 {
            let entry = keys.entry(&PropertyKey(id));
            let (generation, _) = cache.get_current(&entry);
            assert!(cache.store_if_current(&entry, generation, value.clone(), TTL));
        }
        assert!(
            cache.weighted_size() <= bound,
            "{} bytes held",
            cache.weighted_size()
        );
        let last = keys.entry(&PropertyKey(999));
        let (generation, _) = cache.get_current(&last);
        assert!(cache.store_if_current(&last, generation, value.clone(), TTL));
        assert_eq!(
            cache.get_current(&last).1,
            Some(value),
            "eviction makes room"
        );
    }
}
