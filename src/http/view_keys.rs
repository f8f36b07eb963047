//! The normalized URLs of searches, remembered with the query each parsed to. Parsing
//! and validating a search's query (its location folded for comparison, its prices read
//! as decimals) and writing it back in canonical order took 6 % of the server's time in
//! `bench/mix`, hits included, while a site's traffic repeats the same few thousand
//! queries; a miss's handler then reads the query parsed here rather than parsing it
//! again. A fixed table of slots, each holding one query and what it normalizes to: a
//! lookup is a hash, a lock that another thread rarely holds and a comparison; two
//! queries sharing a slot only cost a parse. Normalizing is a function of the query
//! alone, so a remembered key is never stale.

use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use crate::domain::PropertyQuery;
use crate::stable_hash::fnv1a64;

/// Slots in the table.
const SLOTS: usize = 4096;
/// Longer queries, and queries whose key is longer, are normalized every time: the
/// table holds at most SLOTS × 2 × LONGEST bytes of text (and a parsed query each).
const LONGEST: usize = 256;

/// A query's normalized URL and what else normalizing it gave (`V`).
type Normalized<V> = (Arc<str>, V);
/// A query and what it normalizes to (`None`: not a valid search).
type Remembered<V> = (Box<str>, Option<Normalized<V>>);

/// A search's query as the view layer parsed it, handed to the handler of its miss
/// (request extensions are set by the server, never by clients).
#[derive(Clone)]
pub struct ParsedQuery(pub Arc<PropertyQuery>);

static TABLE: LazyLock<Table<ParsedQuery>> = LazyLock::new(|| Table::new(SLOTS));

struct Table<V> {
    slots: Box<[Mutex<Option<Remembered<V>>>]>,
}

impl<V: Clone> Table<V> {
    fn new(slots: usize) -> Table<V> {
        Table {
            slots: (0..slots).map(|_| Mutex::new(None)).collect(),
        }
    }

    fn normalized(
        &self,
        query: &str,
        normalize: impl FnOnce(&str) -> Option<(String, V)>,
    ) -> Option<Normalized<V>> {
        let normalize = |query| normalize(query).map(|(key, v)| (Arc::<str>::from(key), v));
        if query.len() > LONGEST || self.slots.is_empty() {
            return normalize(query);
        }
        // FNV's low bits mix least: fold the high half in.
        let hash = fnv1a64(query.as_bytes());
        let slot = &self.slots[(hash ^ (hash >> 32)) as usize % self.slots.len()];
        if let Some((seen, normalized)) = &*slot.lock().unwrap_or_else(PoisonError::into_inner)
            && **seen == *query
        {
            return normalized.clone();
        }
        let normalized = normalize(query);
        // Escaping can make a key longer than its query: a long one is not kept either.
        if normalized
            .as_ref()
            .is_none_or(|(key, _)| key.len() <= LONGEST)
        {
            *slot.lock().unwrap_or_else(PoisonError::into_inner) =
                Some((query.into(), normalized.clone()));
        }
        normalized
    }
}

/// What `normalize` makes of `query` (its normalized URL and its parse), remembered for
/// the next request that sends it.
pub fn normalized(
    query: &str,
    normalize: impl FnOnce(&str) -> Option<(String, ParsedQuery)>,
) -> Option<(Arc<str>, ParsedQuery)> {
    TABLE.normalized(query, normalize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_is_normalized_once_and_a_shared_slot_costs_only_a_parse() {
        let table = Table::<()>::new(1);
        let key = |normalized: Option<(Arc<str>, ())>| normalized.map(|(key, ())| key.to_string());
        let calls = std::cell::Cell::new(0);
        let upper = |q: &str| {
            calls.set(calls.get() + 1);
            (!q.is_empty()).then(|| (q.to_uppercase(), ()))
        };
        assert_eq!(key(table.normalized("a=1", upper)).as_deref(), Some("A=1"));
        assert_eq!(key(table.normalized("a=1", upper)).as_deref(), Some("A=1"));
        assert_eq!(calls.get(), 1, "remembered");
        assert_eq!(key(table.normalized("b=2", upper)).as_deref(), Some("B=2"));
        assert_eq!(key(table.normalized("a=1", upper)).as_deref(), Some("A=1"));
        assert_eq!(calls.get(), 3, "one slot: each query displaced the other");
        assert_eq!(key(table.normalized("", upper)), None);
        assert_eq!(key(table.normalized("", upper)), None);
        assert_eq!(calls.get(), 4, "an invalid query is remembered as invalid");
        let long = "x".repeat(LONGEST + 1);
        table.normalized(&long, upper);
        table.normalized(&long, upper);
        assert_eq!(calls.get(), 6, "a long query is not remembered");
        let widening = |q: &str| {
            calls.set(calls.get() + 1);
            Some((q.repeat(3), ()))
        };
        let short = "y".repeat(LONGEST / 2);
        table.normalized(&short, widening);
        table.normalized(&short, widening);
        assert_eq!(calls.get(), 8, "nor a query whose key is long");
    }
}
