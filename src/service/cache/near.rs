//! The near-cache: whole responses kept in this process, ready to send (header values
//! built, every encoding at hand), so that a view hit costs no decoding, no allocation
//! of header values and, in Redis mode, no Redis round trip.
//!
//! An entry is kept with the generation it was rendered under and served only while
//! the cache vouches for that generation (see `Cache::near_generation`): a bump makes
//! every entry unservable at once, and the next rendering replaces it in place.

use std::sync::Arc;

use moka::sync::Cache;

use crate::view::ReadyView;

/// Per-entry bookkeeping moka and the maps keep besides the bytes, for the weigher.
const ENTRY_OVERHEAD_BYTES: usize = 128;

pub struct NearCache {
    entries: Cache<Arc<str>, (u64, Arc<ReadyView>)>,
}

impl NearCache {
    /// A near-cache holding at most `max_bytes` of responses, each for at most `ttl`
    /// (the view TTL: a page nobody retires still gets rebuilt in time).
    pub fn new(max_bytes: u64, ttl: std::time::Duration) -> NearCache {
        let entries = Cache::builder()
            .max_capacity(max_bytes)
            .time_to_live(ttl)
            .weigher(|key: &Arc<str>, (_, view): &(u64, Arc<ReadyView>)| {
                u32::try_from(key.len() + view.weight() + ENTRY_OVERHEAD_BYTES).unwrap_or(u32::MAX)
            })
            .build();
        NearCache { entries }
    }

    /// The response kept for `key` if it was rendered under `generation`.
    pub fn get(&self, key: &str, generation: u64) -> Option<Arc<ReadyView>> {
        self.entries
            .get(key)
            .filter(|(kept_under, _)| *kept_under == generation)
            .map(|(_, view)| view)
    }

    pub fn insert(&self, key: &str, generation: u64, view: Arc<ReadyView>) {
        self.entries.insert(Arc::from(key), (generation, view));
    }
}
