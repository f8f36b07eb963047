//! The in-process cache of the embedded mode. The generation and the entries sit under
//! one lock, so "store only if the generation is unchanged" is a compare under that lock.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::cache::keys::{EntryKey, Resource};

/// Enough for every page and query a listing site serves; past it, stores are skipped
/// until entries expire or a write retires them.
const MAX_ENTRIES: usize = 10_000;

#[derive(Default)]
pub struct MemoryCache {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    generations: HashMap<Resource, u64>,
    entries: HashMap<String, Entry>,
}

struct Entry {
    value: Bytes,
    expires_at: Instant,
}

impl MemoryCache {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current generation and, when present and fresh, the entry stored under it.
    pub fn lookup(&self, key: &EntryKey) -> (u64, Option<Bytes>) {
        let state = self.state();
        let generation = state
            .generations
            .get(&key.resource)
            .copied()
            .unwrap_or_default();
        let value = state
            .entries
            .get(&key.at(generation))
            .filter(|entry| entry.expires_at > Instant::now())
            .map(|entry| entry.value.clone());
        (generation, value)
    }

    /// Stores only if no write bumped the generation since the caller's lookup.
    pub fn store_if_current(
        &self,
        key: &EntryKey,
        generation: u64,
        value: Bytes,
        ttl: Duration,
    ) -> bool {
        let mut state = self.state();
        if state
            .generations
            .get(&key.resource)
            .copied()
            .unwrap_or_default()
            != generation
        {
            return false;
        }
        let now = Instant::now();
        if state.entries.len() >= MAX_ENTRIES {
            state.entries.retain(|_, entry| entry.expires_at > now);
            if state.entries.len() >= MAX_ENTRIES {
                return false;
            }
        }
        state.entries.insert(
            key.at(generation),
            Entry {
                value,
                expires_at: now + ttl,
            },
        );
        true
    }

    /// Retires every entry of `resource`; `entries_prefix` is `KeySpace::entries_of`.
    pub fn bump(&self, resource: Resource, entries_prefix: &str) -> u64 {
        let mut state = self.state();
        let generation = state.generations.entry(resource).or_default();
        *generation += 1;
        let generation = *generation;
        // Unlike Redis, memory is ours to reclaim at once.
        state
            .entries
            .retain(|key, _| !key.starts_with(entries_prefix));
        generation
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::keys::{AllPropertiesKey, KeySpace};

    #[test]
    fn a_bump_refuses_stores_begun_before_it() {
        let cache = MemoryCache::default();
        let keys = KeySpace::new("t:");
        let entry = keys.entry(&AllPropertiesKey);
        let (generation, value) = cache.lookup(&entry);
        assert_eq!(value, None);
        cache.bump(Resource::Properties, &keys.entries_of(Resource::Properties));
        let ttl = Duration::from_secs(60);
        assert!(!cache.store_if_current(&entry, generation, Bytes::from_static(b"old"), ttl));
        let (generation, _) = cache.lookup(&entry);
        assert!(cache.store_if_current(&entry, generation, Bytes::from_static(b"new"), ttl));
        assert_eq!(cache.lookup(&entry).1, Some(Bytes::from_static(b"new")));
    }
}
