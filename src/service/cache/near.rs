//! The near-cache: whole responses kept in this process, ready to send (header values
//! built, each encoding made so far at hand), so that a view hit costs no decoding, no
//! allocation of header values and, in Redis mode, no Redis round trip.
//!
//! An entry is kept with the stamp of its rendering and served only while a clock the
//! cache vouches for says it is current (see `Cache::near_clock`): a write retires the
//! entries it can change at once, and the next rendering replaces them in place.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use moka::sync::Cache;

use crate::service::cache::clock::{Stamp, TagClock};
use crate::view::ReadyView;

/// Per-entry bookkeeping moka and the maps keep besides the bytes, for the weigher.
const ENTRY_OVERHEAD_BYTES: usize = 128;

/// A ready response and the stamp of its rendering.
pub struct Kept {
    pub stamp: Stamp,
    pub view: Arc<ReadyView>,
    completing: AtomicBool,
}

impl Kept {
    /// True for the first caller only: the one that makes the variants it lacks.
    pub fn first_to_complete(&self) -> bool {
        !self.completing.swap(true, Ordering::AcqRel)
    }
}

pub struct NearCache {
    entries: Cache<Arc<str>, Arc<Kept>>,
}

impl NearCache {
    /// A near-cache holding at most `max_bytes` of responses, each for at most `ttl`
    /// (the view TTL: a page nobody retires still gets rebuilt in time).
    pub fn new(max_bytes: u64, ttl: std::time::Duration) -> NearCache {
        let entries = Cache::builder()
            .max_capacity(max_bytes)
            .time_to_live(ttl)
            .weigher(|key: &Arc<str>, kept: &Arc<Kept>| {
                let tags = kept.stamp.tags.len() * std::mem::size_of::<u32>();
                u32::try_from(key.len() + kept.view.weight() + tags + ENTRY_OVERHEAD_BYTES)
                    .unwrap_or(u32::MAX)
            })
            .build();
        NearCache { entries }
    }

    /// The response kept for `key` if `clock` says it is current.
    pub fn get(&self, key: &str, clock: &TagClock) -> Option<Arc<Kept>> {
        self.entries
            .get(key)
            .filter(|kept| clock.is_current(&kept.stamp))
    }

    /// The sequence of the response kept for `key`, if a write has retired it.
    pub fn retired_seq(&self, key: &str, clock: &TagClock) -> Option<u64> {
        self.entries
            .get(key)
            .filter(|kept| !clock.is_current(&kept.stamp))
            .map(|kept| kept.stamp.seq)
    }

    pub fn insert(&self, key: &str, stamp: Stamp, view: Arc<ReadyView>) {
        let kept = Kept {
            stamp,
            view,
            completing: AtomicBool::new(false),
        };
        self.entries.insert(Arc::from(key), Arc::new(kept));
    }
}
