//! Every metric the service keeps, declared here and nowhere else. Counters are per
//! process; in Redis mode the per-kind cache counters, requests and database queries
//! are also kept in Redis (see `cache::redis`) so that `cache-metrics` and the
//! dashboard see every server process at once.

pub mod events;
pub mod latency;
mod prometheus;
pub mod replicas;

pub use prometheus::{counts_from_text as counts_from_prometheus, parse_prometheus_sample};

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use events::{Cause, InvalidationLog};
use latency::{LatencyHistogram, LatencySnapshot};

/// What cache hits and misses are counted per.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CacheKind {
    /// Whole HTTP responses.
    View,
    /// The first page of the default listing, the low-level key `all_properties`.
    AllProperties,
    /// Every other search (filters, orders, pages).
    Queries,
    /// Single properties by id.
    Items,
}

impl CacheKind {
    pub const ALL: [CacheKind; 4] = [
        CacheKind::View,
        CacheKind::AllProperties,
        CacheKind::Queries,
        CacheKind::Items,
    ];

    pub fn name(self) -> &'static str {
        match self {
            CacheKind::View => "view",
            CacheKind::AllProperties => "all_properties",
            CacheKind::Queries => "queries",
            CacheKind::Items => "items",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Default)]
pub struct Metrics {
    hits: [AtomicU64; CacheKind::ALL.len()],
    misses: [AtomicU64; CacheKind::ALL.len()],
    /// Statements sent to the database by pooled connections.
    db_queries: AtomicU64,
    /// Cache operations that failed and fell back to the database.
    cache_errors: AtomicU64,
    /// Change notifications received from PostgreSQL (LISTEN).
    change_notifications: AtomicU64,
    /// Times the PostgreSQL listener (re)connected; each one invalidates everything.
    listener_connects: AtomicU64,
    /// Connections closed at the connection cap to make room for a new client.
    connections_displaced: AtomicU64,
    /// Pages loaded from the database that counted their matches themselves.
    counts_computed: AtomicU64,
    /// Pages loaded from the database that took a count another page of the search had
    /// made (and the database confirmed current).
    counts_shared: AtomicU64,
    /// Pages read from the database in one statement, and the time those statements
    /// took (from sending to the last row, a connection in hand).
    page_reads: AtomicU64,
    page_read_ns: AtomicU64,
    /// Round trips to Redis for cached entries: lookups (with their checks), fill locks
    /// and stores.
    entry_round_trips: AtomicU64,
    /// How long each HTTP request on the main address took; its count is the number of
    /// requests answered.
    latency: LatencyHistogram,
    /// How long each phase of a write took, per [`WritePhase`].
    write_phases: [LatencyHistogram; WritePhase::ALL.len()],
    invalidations: InvalidationLog,
    /// Where database reads went: the primary or a replica, and why not a replica.
    pub reads: replicas::ReadRouting,
}

/// The phases of a write, timed apart so that a slow acknowledgement can be told to
/// come from a busy pool, the database or the cache. Failed writes count too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WritePhase {
    /// Waiting for a write connection (or the pool timeout).
    Connection,
    /// The transaction, from its first statement to COMMIT's answer (or the deadline,
    /// on PostgreSQL; on SQLite, whose write runs to its end, to that end).
    Transaction,
    /// Retiring what the write changed, on every server, after the commit.
    Invalidation,
}

impl WritePhase {
    pub const ALL: [WritePhase; 3] = [
        WritePhase::Connection,
        WritePhase::Transaction,
        WritePhase::Invalidation,
    ];

    pub fn name(self) -> &'static str {
        match self {
            WritePhase::Connection => "connection",
            WritePhase::Transaction => "transaction",
            WritePhase::Invalidation => "invalidation",
        }
    }
}

/// Hits and misses of one kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HitsMisses {
    pub hits: u64,
    pub misses: u64,
}

impl HitsMisses {
    /// hits / (hits + misses), 0 when nothing was counted.
    pub fn hit_ratio(&self) -> f64 {
        let total = self.hits + self.misses;
        if total == 0 {
            0.0
        } else {
            self.hits as f64 / total as f64
        }
    }

    /// hits / (hits + misses), `None` when nothing was counted.
    pub fn ratio_if_any(&self) -> Option<f64> {
        (self.hits + self.misses > 0).then(|| self.hit_ratio())
    }
}

/// The counters that add up across processes (Redis keeps their sums): hits and
/// misses per kind, requests, database queries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub cache: [HitsMisses; CacheKind::ALL.len()],
    pub requests: u64,
    pub db_queries: u64,
    pub reads: replicas::ReadCounts,
}

impl Counts {
    pub fn kind(&self, kind: CacheKind) -> HitsMisses {
        self.cache[kind.index()]
    }

    /// What was counted after `earlier` (counters only grow; a reset counts as zero).
    pub fn since(&self, earlier: &Counts) -> Counts {
        Counts {
            cache: std::array::from_fn(|i| HitsMisses {
                hits: self.cache[i].hits.saturating_sub(earlier.cache[i].hits),
                misses: self.cache[i].misses.saturating_sub(earlier.cache[i].misses),
            }),
            requests: self.requests.saturating_sub(earlier.requests),
            db_queries: self.db_queries.saturating_sub(earlier.db_queries),
            reads: replicas::ReadCounts {
                primary: self.reads.primary.saturating_sub(earlier.reads.primary),
                replicas: self.reads.replicas.saturating_sub(earlier.reads.replicas),
                fallbacks: std::array::from_fn(|i| {
                    self.reads.fallbacks[i].saturating_sub(earlier.reads.fallbacks[i])
                }),
            },
        }
    }

    /// The counters' names, in the order of [`Counts::values`]: `<kind>:hits` and
    /// `<kind>:misses` per kind, then `requests`, `db_queries`, `reads:primary`,
    /// `reads:replicas` and `fallbacks:<reason>` per reason.
    pub fn names() -> Vec<String> {
        let mut names: Vec<String> = CacheKind::ALL
            .into_iter()
            .flat_map(|kind| {
                [
                    format!("{}:hits", kind.name()),
                    format!("{}:misses", kind.name()),
                ]
            })
            .collect();
        names.extend(["requests".to_owned(), "db_queries".to_owned()]);
        names.extend(["reads:primary".to_owned(), "reads:replicas".to_owned()]);
        names.extend(replicas::Fallback::ALL.map(|reason| format!("fallbacks:{}", reason.name())));
        names
    }

    /// The counters, in the order of [`Counts::names`].
    pub fn values(&self) -> Vec<u64> {
        let mut values: Vec<u64> = self.cache.iter().flat_map(|c| [c.hits, c.misses]).collect();
        values.extend([self.requests, self.db_queries]);
        values.extend([self.reads.primary, self.reads.replicas]);
        values.extend(self.reads.fallbacks);
        values
    }

    /// The counts from values in the order of [`Counts::names`] (a missing one is 0).
    pub fn from_values(values: &[Option<u64>]) -> Counts {
        let at = |i: usize| values.get(i).copied().flatten().unwrap_or_default();
        let kinds = CacheKind::ALL.len();
        Counts {
            cache: std::array::from_fn(|k| HitsMisses {
                hits: at(2 * k),
                misses: at(2 * k + 1),
            }),
            requests: at(2 * kinds),
            db_queries: at(2 * kinds + 1),
            reads: replicas::ReadCounts {
                primary: at(2 * kinds + 2),
                replicas: at(2 * kinds + 3),
                fallbacks: std::array::from_fn(|i| at(2 * kinds + 4 + i)),
            },
        }
    }
}

impl Metrics {
    pub fn counts(&self) -> Counts {
        Counts {
            cache: CacheKind::ALL.map(|kind| self.cache(kind)),
            requests: self.requests(),
            db_queries: self.db_queries(),
            reads: self.reads.counts(),
        }
    }

    pub fn record_hit(&self, kind: CacheKind) {
        self.hits[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_miss(&self, kind: CacheKind) {
        self.misses[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_request(&self, latency: Duration) {
        self.latency.record(latency);
    }

    pub fn requests(&self) -> u64 {
        self.latency().count()
    }

    pub fn latency(&self) -> LatencySnapshot {
        self.latency.snapshot()
    }

    pub fn record_write_phase(&self, phase: WritePhase, took: Duration) {
        self.write_phases[phase as usize].record(took);
    }

    pub fn write_phase(&self, phase: WritePhase) -> LatencySnapshot {
        self.write_phases[phase as usize].snapshot()
    }

    /// Every retirement of the cache, with what caused it (`property 7 created`).
    pub fn record_invalidation(&self, cause: Cause<'_>) {
        self.invalidations.record(cause.what, cause.origin);
    }

    pub fn invalidations(&self) -> &InvalidationLog {
        &self.invalidations
    }

    pub fn record_db_query(&self) {
        self.db_queries.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_cache_error(&self) {
        self.cache_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_change_notification(&self) {
        self.change_notifications.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_listener_connect(&self) {
        self.listener_connects.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_connection_displaced(&self) {
        self.connections_displaced.fetch_add(1, Ordering::Relaxed);
    }

    /// A page loaded from the database counted its matches (`shared`: took a count
    /// another page of its search had made).
    pub fn record_count(&self, shared: bool) {
        let counter = if shared {
            &self.counts_shared
        } else {
            &self.counts_computed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_entry_round_trip(&self) {
        self.entry_round_trips.fetch_add(1, Ordering::Relaxed);
    }

    pub fn entry_round_trips(&self) -> u64 {
        self.entry_round_trips.load(Ordering::Relaxed)
    }

    /// A page read in one statement, and how long the statement took.
    pub fn record_page_read(&self, took: Duration) {
        self.page_reads.fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.page_read_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Pages read in one statement, and the seconds those statements took in all.
    pub fn page_reads(&self) -> (u64, f64) {
        let ns = self.page_read_ns.load(Ordering::Relaxed);
        (self.page_reads.load(Ordering::Relaxed), ns as f64 / 1e9)
    }

    pub fn counts_computed(&self) -> u64 {
        self.counts_computed.load(Ordering::Relaxed)
    }

    pub fn counts_shared(&self) -> u64 {
        self.counts_shared.load(Ordering::Relaxed)
    }

    pub fn change_notifications(&self) -> u64 {
        self.change_notifications.load(Ordering::Relaxed)
    }

    pub fn listener_connects(&self) -> u64 {
        self.listener_connects.load(Ordering::Relaxed)
    }

    pub fn connections_displaced(&self) -> u64 {
        self.connections_displaced.load(Ordering::Relaxed)
    }

    pub fn cache(&self, kind: CacheKind) -> HitsMisses {
        HitsMisses {
            hits: self.hits[kind.index()].load(Ordering::Relaxed),
            misses: self.misses[kind.index()].load(Ordering::Relaxed),
        }
    }

    pub fn db_queries(&self) -> u64 {
        self.db_queries.load(Ordering::Relaxed)
    }

    pub fn cache_errors(&self) -> u64 {
        self.cache_errors.load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition format, served at `GET /metrics`.
    pub fn render_prometheus(&self) -> String {
        prometheus::render(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_round_trip_through_their_shared_order() {
        let counts = Counts {
            cache: std::array::from_fn(|k| HitsMisses {
                hits: 10 * k as u64 + 1,
                misses: 10 * k as u64 + 2,
            }),
            requests: 7,
            db_queries: 9,
            reads: replicas::ReadCounts {
                primary: 11,
                replicas: 12,
                fallbacks: std::array::from_fn(|i| 13 + i as u64),
            },
        };
        let values: Vec<Option<u64>> = counts.values().into_iter().map(Some).collect();
        assert_eq!(Counts::from_values(&values), counts);
        assert_eq!(Counts::names().len(), values.len());
        assert_eq!(Counts::names()[0], "view:hits");
        assert_eq!(
            Counts::names().last().map(String::as_str),
            Some("fallbacks:failed")
        );
    }

    #[test]
    fn prometheus_text_round_trips() {
        let metrics = Metrics::default();
        metrics.record_hit(CacheKind::View);
        metrics.record_miss(CacheKind::AllProperties);
        metrics.record_db_query();
        let text = metrics.render_prometheus();
        assert_eq!(
            parse_prometheus_sample(&text, r#"listings_cache_hits_total{kind="view"}"#),
            Some(1)
        );
        assert_eq!(
            parse_prometheus_sample(
                &text,
                r#"listings_cache_misses_total{kind="all_properties"}"#
            ),
            Some(1)
        );
        assert_eq!(
            parse_prometheus_sample(&text, "listings_db_queries_total"),
            Some(1)
        );
        metrics.record_request(Duration::from_micros(120));
        metrics.record_invalidation(Cause::this_process("property 1 created"));
        metrics.record_connection_displaced();
        let text = metrics.render_prometheus();
        assert_eq!(
            parse_prometheus_sample(&text, "listings_http_requests_total"),
            Some(1)
        );
        assert_eq!(
            parse_prometheus_sample(
                &text,
                r#"listings_http_request_duration_seconds_bucket{le="0.000125"}"#
            ),
            Some(1)
        );
        assert_eq!(
            parse_prometheus_sample(
                &text,
                r#"listings_http_request_duration_seconds_bucket{le="0.0001"}"#
            ),
            Some(0)
        );
        assert_eq!(
            parse_prometheus_sample(&text, "listings_http_request_duration_seconds_count"),
            Some(1)
        );
        assert!(
            text.contains("\nlistings_http_request_duration_seconds_sum 0.00012\n"),
            "{text}"
        );
        assert_eq!(
            parse_prometheus_sample(&text, "listings_invalidations_total"),
            Some(1)
        );
        assert_eq!(
            parse_prometheus_sample(&text, "listings_http_connections_displaced_total"),
            Some(1)
        );
        metrics.record_write_phase(WritePhase::Transaction, Duration::from_millis(3));
        let text = metrics.render_prometheus();
        for (sample, value) in [
            (
                r#"listings_write_duration_seconds_bucket{phase="transaction",le="0.0025"}"#,
                0,
            ),
            (
                r#"listings_write_duration_seconds_bucket{phase="transaction",le="0.00315"}"#,
                1,
            ),
            (
                r#"listings_write_duration_seconds_count{phase="transaction"}"#,
                1,
            ),
            (
                r#"listings_write_duration_seconds_count{phase="connection"}"#,
                0,
            ),
        ] {
            assert_eq!(
                parse_prometheus_sample(&text, sample),
                Some(value),
                "{sample}"
            );
        }
        assert!(
            text.contains("listings_write_duration_seconds_sum{phase=\"transaction\"} 0.003\n"),
            "{text}"
        );
        assert_eq!(HitsMisses { hits: 0, misses: 0 }.hit_ratio(), 0.0);
        assert_eq!(HitsMisses { hits: 3, misses: 1 }.hit_ratio(), 0.75);
    }
}
