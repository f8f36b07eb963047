//! The in-process cache of the embedded mode: a moka cache bounded in bytes (keys and
//! values), with per-entry expiry and its own eviction, plus the clock (see `clock`):
//! every bump happens in this process, so the clock is always current, and an entry is
//! served only while it is.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use moka::Expiry;
use moka::sync::Cache;

use crate::metrics::events::Cause;
use crate::service::cache::backend::{
    CacheBackend, CacheBackendStatus, Fill, FillClaim, Lookup, Pending,
};
use crate::service::cache::clock::{Stamp, TagClock};
use crate::service::cache::keys::EntryKey;
use crate::service::cache::tags::TagSet;

/// Per-entry bookkeeping moka keeps besides the bytes, for the weigher.
const ENTRY_OVERHEAD_BYTES: usize = 64;

pub struct MemoryCache {
    clock: TagClock,
    /// Bumps take the sequence's numbers one at a time.
    bumping: Mutex<()>,
    entries: Cache<String, Entry>,
}

#[derive(Clone)]
struct Entry {
    value: Bytes,
    stamp: std::sync::Arc<Stamp>,
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
                let tags = entry.stamp.tags.len() * std::mem::size_of::<u32>();
                u32::try_from(key.len() + entry.value.len() + tags + ENTRY_OVERHEAD_BYTES)
                    .unwrap_or(u32::MAX)
            })
            .expire_after(EntryTtl)
            .build();
        MemoryCache {
            clock: TagClock::default(),
            bumping: Mutex::new(()),
            entries,
        }
    }

    /// The entry if it is current, else the number a load now is stamped with.
    fn get_current(&self, key: &EntryKey) -> Result<(Bytes, Stamp), u64> {
        let seq = self.clock.seq();
        match self.entries.get(key.as_str()) {
            Some(entry) if self.clock.is_current(&entry.stamp) => {
                Ok((entry.value, Stamp::clone(&entry.stamp)))
            }
            _ => Err(seq),
        }
    }

    /// Stores unless a write has retired the value since its load began.
    fn store_if_current(&self, key: &EntryKey, stamp: Stamp, value: Bytes, ttl: Duration) -> bool {
        if !self.clock.is_current(&stamp) {
            return false;
        }
        let stamp = std::sync::Arc::new(stamp);
        self.entries
            .insert(key.as_str().to_owned(), Entry { value, stamp, ttl });
        true
    }

    /// Retires every entry sharing a tag with `tags`.
    fn bump_tags(&self, tags: &TagSet) {
        let _one_at_a_time = self
            .bumping
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.clock.record(self.clock.next(), tags.iter());
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

    /// Always current: every bump happens in this process.
    fn near_clock(&self) -> Option<&TagClock> {
        Some(&self.clock)
    }

    fn lookup<'a>(
        &'a self,
        entry: &'a EntryKey,
        _fill_lock: Option<FillClaim>,
    ) -> Pending<'a, Lookup> {
        let found = match self.get_current(entry) {
            Ok((value, stamp)) => Lookup::Hit { value, stamp },
            // Looking up the data of a retired page costs nothing here: never skipped.
            Err(seq) => Lookup::Miss {
                seq,
                may_fill: true,
                retired: false,
            },
        };
        Box::pin(std::future::ready(found))
    }

    fn store_all<'a>(&'a self, fills: Vec<Fill<'a>>) -> Pending<'a, Vec<bool>> {
        let stored = fills
            .into_iter()
            .map(|fill| self.store_if_current(fill.entry, fill.stamp, fill.value, fill.ttl))
            .collect();
        Box::pin(std::future::ready(stored))
    }

    fn bump<'a>(
        &'a self,
        tags: &'a TagSet,
        _cause: Cause<'a>,
        _written_at: Option<crate::service::wal::WalPosition>,
    ) -> Pending<'a, bool> {
        self.bump_tags(tags);
        Box::pin(std::future::ready(true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::cache::keys::{AllPropertiesKey, KeySpace, PropertyKey};
    use crate::service::cache::tags::{ALL, item_tags};

    const TTL: Duration = Duration::from_secs(60);

    fn stamp(seq: u64) -> Stamp {
        Stamp {
            seq,
            tags: TagSet::all(),
        }
    }

    #[test]
    fn a_bump_refuses_stores_begun_before_it() {
        let cache = MemoryCache::new(1 << 20);
        let keys = KeySpace::new("t:");
        let entry = keys.entry(&AllPropertiesKey);
        let Err(seq) = cache.get_current(&entry) else {
            panic!("empty");
        };
        cache.bump_tags(&TagSet::all());
        assert!(!cache.store_if_current(&entry, stamp(seq), Bytes::from_static(b"old"), TTL));
        let Err(seq) = cache.get_current(&entry) else {
            panic!("nothing stored");
        };
        assert!(cache.store_if_current(&entry, stamp(seq), Bytes::from_static(b"new"), TTL));
        assert_eq!(
            cache.get_current(&entry).map(|(value, _)| value),
            Ok(Bytes::from_static(b"new"))
        );
        cache.bump_tags(&TagSet::all());
        assert!(cache.get_current(&entry).is_err(), "retired by the bump");
    }

    #[test]
    fn a_bump_retires_only_entries_sharing_a_tag() {
        let cache = MemoryCache::new(1 << 20);
        let keys = KeySpace::new("t:");
        let (one, two) = (keys.entry(&PropertyKey(1)), keys.entry(&PropertyKey(2)));
        for (entry, id) in [(&one, 1), (&two, 2)] {
            let fill = Stamp {
                seq: cache.clock.seq(),
                tags: item_tags(id),
            };
            assert!(cache.store_if_current(entry, fill, Bytes::from_static(b"x"), TTL));
        }
        let written: TagSet = item_tags(2).iter().filter(|t| *t != ALL).collect();
        cache.bump_tags(&written);
        assert!(cache.get_current(&one).is_ok());
        assert!(cache.get_current(&two).is_err());
    }

    #[test]
    fn the_byte_bound_holds_and_new_entries_still_fit() {
        let bound = 64 * 1024;
        let cache = MemoryCache::new(bound);
        let keys = KeySpace::new("t:");
        let value = Bytes::from(vec![b'x'; 1000]);
        for id in 0..1000 {
            let entry = keys.entry(&PropertyKey(id));
            assert!(cache.store_if_current(&entry, stamp(0), value.clone(), TTL));
        }
        assert!(
            cache.weighted_size() <= bound,
            "{} bytes held",
            cache.weighted_size()
        );
        let last = keys.entry(&PropertyKey(999));
        assert!(cache.store_if_current(&last, stamp(0), value.clone(), TTL));
        assert_eq!(
            cache.get_current(&last).map(|(value, _)| value),
            Ok(value),
            "eviction makes room"
        );
    }
}
