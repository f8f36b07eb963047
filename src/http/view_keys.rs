//! The normalized URLs of searches, remembered. Parsing and validating a search's query
//! (its location folded for comparison, its prices read as decimals) and writing it
//! back in canonical order took 6 % of the server's time in `bench/mix`, hits included,
//! while a site's traffic repeats the same few thousand queries. A fixed table of
//! slots, each holding one query and what it normalizes to: a lookup is a hash, a lock
//! that another thread rarely holds and a comparison; two queries sharing a slot only
//! cost a parse. Normalizing is a function of the query alone, so a remembered key is
//! never stale.

use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use crate::stable_hash::fnv1a64;

/// Slots in the table.
const SLOTS: usize = 4096;
/// Longer queries, and queries whose key is longer, are normalized every time: the
/// table holds at most SLOTS × 2 × LONGEST bytes of text.
const LONGEST: usize = 256;

/// A query and its normalized URL (`None`: not a valid search).
type Remembered = (Box<str>, Option<Arc<str>>);

static TABLE: LazyLock<Table> = LazyLock::new(|| Table::new(SLOTS));

struct Table {
    slots: Box<[Mutex<Option<Remembered>>]>,
}

impl Table {
    fn new(slots: usize) -> Table {
        Table {
            slots: (0..slots).map(|_| Mutex::new(None)).collect(),
        }
    }

    fn normalized(
        &self,
        query: &str,
        normalize: impl FnOnce(&str) -> Option<String>,
    ) -> Option<Arc<str>> {
        if query.len() > LONGEST || self.slots.is_empty() {
            return normalize(query).map(Arc::from);
        }
        // FNV's low bits mix least: fold the high half in.
        let hash = fnv1a64(query.as_bytes());
        let slot = &self.slots[(hash ^ (hash >> 32)) as usize % self.slots.len()];
        if let Some((seen, key)) = &*slot.lock().unwrap_or_else(PoisonError::into_inner)
            && **seen == *query
        {
            return key.clone();
        }
        let key: Option<Arc<str>> = normalize(query).map(Arc::from);
        // Escaping can make a key longer than its query: a long one is not kept either.
        if key.as_ref().is_none_or(|key| key.len() <= LONGEST) {
            *slot.lock().unwrap_or_else(PoisonError::into_inner) =
                Some((query.into(), key.clone()));
        }
        key
    }
}

/// What `normalize` makes of `query`, remembered for the next request that sends it.
pub fn normalized(query: &str, normalize: impl FnOnce(&str) -> Option<String>) -> Option<Arc<str>> {
    TABLE.normalized(query, normalize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_is_normalized_once_and_a_shared_slot_costs_only_a_parse() {
        let table = Table::new(1);
        let calls = std::cell::Cell::new(0);
        let upper = |q: &str| {
            calls.set(calls.get() + 1);
            (!q.is_empty()).then(|| q.to_uppercase())
        };
        assert_eq!(table.normalized("a=1", upper).as_deref(), Some("A=1"));
        assert_eq!(table.normalized("a=1", upper).as_deref(), Some("A=1"));
        assert_eq!(calls.get(), 1, "remembered");
        assert_eq!(table.normalized("b=2", upper).as_deref(), Some("B=2"));
        assert_eq!(table.normalized("a=1", upper).as_deref(), Some("A=1"));
        assert_eq!(calls.get(), 3, "one slot: each query displaced the other");
        assert_eq!(table.normalized("", upper), None);
        assert_eq!(table.normalized("", upper), None);
        assert_eq!(calls.get(), 4, "an invalid query is remembered as invalid");
        let long = "x".repeat(LONGEST + 1);
        table.normalized(&long, upper);
        table.normalized(&long, upper);
        assert_eq!(calls.get(), 6, "a long query is not remembered");
        let widening = |q: &str| {
            calls.set(calls.get() + 1);
            Some(q.repeat(3))
        };
        let short = "y".repeat(LONGEST / 2);
        table.normalized(&short, widening);
        table.normalized(&short, widening);
        assert_eq!(calls.get(), 8, "nor a query whose key is long");
    }
}
