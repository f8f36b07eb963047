//! Every page of one search shares one count: a page loaded from the database reuses
//! the count another page of its search made, when the database confirms, in the page's
//! own read transaction, that nothing that count depends on has changed since (the
//! versions of its count nodes are the same: see the `row_changes` migration). So the
//! page and its count still come from one snapshot, and each search is counted once per
//! change, not once per page. Kept in this process, bounded.

use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;

use crate::domain::PropertyQuery;

/// How many searches' counts are kept.
const SEARCHES_KEPT: u64 = 10_000;

/// A count and the versions of the count nodes it was made under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KnownCount {
    pub versions: Vec<i64>,
    pub count: i64,
}

pub struct CountMemo {
    counts: Cache<String, Arc<KnownCount>>,
}

impl CountMemo {
    /// Counts are kept at most `ttl` (the data TTL).
    pub fn new(ttl: Duration) -> CountMemo {
        CountMemo {
            counts: Cache::builder()
                .max_capacity(SEARCHES_KEPT)
                .time_to_live(ttl)
                .build(),
        }
    }

    pub fn get(&self, query: &PropertyQuery) -> Option<Arc<KnownCount>> {
        self.counts.get(&filter_of(query))
    }

    pub fn insert(&self, query: &PropertyQuery, known: KnownCount) {
        self.counts.insert(filter_of(query), Arc::new(known));
    }
}

/// What a count depends on of a search: its filters, not its order or page.
fn filter_of(query: &PropertyQuery) -> String {
    PropertyQuery {
        location: query.location.clone(),
        min_price: query.min_price.clone(),
        max_price: query.max_price.clone(),
        search: query.search.clone(),
        ..PropertyQuery::default()
    }
    .canonical()
}
