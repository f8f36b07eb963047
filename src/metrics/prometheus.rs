//! The Prometheus text of `GET /metrics`: every metric's name, written once, the
//! rendering, and the reading back that `cache-metrics` does (with a round-trip test).

use std::fmt::Write as _;

use super::latency::LatencySnapshot;
use super::{CacheKind, Counts, HitsMisses, Metrics, WritePhase};

/// The names both the rendering and the reading back use (the others are written once,
/// in `render`).
mod names {
    pub const CACHE_HITS: &str = "listings_cache_hits_total";
    pub const CACHE_MISSES: &str = "listings_cache_misses_total";
    pub const HTTP_REQUESTS: &str = "listings_http_requests_total";
    pub const DB_QUERIES: &str = "listings_db_queries_total";
    pub const PRIMARY_READS: &str = "listings_db_reads_total{server=\"primary\"}";
    pub const REPLICA_READS: &str = "listings_db_replica_reads_total";
}

/// The sample name of a per-kind cache counter.
fn per_kind(name: &str, kind: CacheKind) -> String {
    format!("{name}{{kind=\"{}\"}}", kind.name())
}

/// A histogram's samples; `labels` (empty, or ending with a comma) go before `le`.
fn histogram(out: &mut String, name: &str, labels: &str, snapshot: &LatencySnapshot) {
    for (bound, count) in snapshot.cumulative() {
        let le = bound.map_or_else(|| "+Inf".to_owned(), super::latency::seconds_label);
        let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{le}\"}} {count}");
    }
    let labels = labels.trim_end_matches(',');
    let braced = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    };
    let _ = writeln!(out, "{name}_sum{braced} {}", snapshot.sum().as_secs_f64());
    let _ = writeln!(out, "{name}_count{braced} {}", snapshot.count());
}

pub fn render(metrics: &Metrics) -> String {
    let mut out = String::new();
    let name = "listings_http_request_duration_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Time from a request's arrival to its response, on the main address.\n# TYPE {name} histogram"
    );
    let latency = metrics.latency();
    histogram(&mut out, name, "", &latency);
    let name = "listings_write_duration_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Time each phase of a write took: waiting for a connection, the transaction, the invalidation after its commit.\n# TYPE {name} histogram"
    );
    for phase in WritePhase::ALL {
        let label = format!("phase=\"{}\",", phase.name());
        histogram(&mut out, name, &label, &metrics.write_phase(phase));
    }
    for (name, help, pick) in [
        (
            names::CACHE_HITS,
            "Cache hits since the process started.",
            true,
        ),
        (
            names::CACHE_MISSES,
            "Cache misses since the process started.",
            false,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for kind in CacheKind::ALL {
            let counts = metrics.cache(kind);
            let value = if pick { counts.hits } else { counts.misses };
            let _ = writeln!(out, "{} {value}", per_kind(name, kind));
        }
    }
    for (name, help, value) in [
        (
            names::HTTP_REQUESTS,
            "HTTP requests answered on the main address.",
            latency.count(),
        ),
        (
            "listings_http_connections_displaced_total",
            "Connections stalled on their first request head that were closed to make room for a new client at the connection cap.",
            metrics.connections_displaced(),
        ),
        (
            "listings_invalidations_total",
            "Times this process retired the cache (its writes, others' changes, recoveries).",
            metrics.invalidations.total(),
        ),
        (
            names::DB_QUERIES,
            "Statements sent to the database.",
            metrics.db_queries(),
        ),
        (
            "listings_cache_errors_total",
            "Cache operations that failed and fell back to the database.",
            metrics.cache_errors(),
        ),
        (
            "listings_change_notifications_total",
            "Change notifications received from PostgreSQL.",
            metrics.change_notifications(),
        ),
        (
            "listings_listener_connects_total",
            "Times the PostgreSQL change listener connected (each retires every cache entry).",
            metrics.listener_connects(),
        ),
        (
            "listings_db_counts_computed_total",
            "Pages loaded from the database that counted their matches.",
            metrics.counts_computed(),
        ),
        (
            "listings_db_counts_shared_total",
            "Pages loaded from the database that took the count of their search another page had made, confirmed current by the database.",
            metrics.counts_shared(),
        ),
        (
            "listings_cache_redis_round_trips_total",
            "Round trips to Redis for cached entries: lookups (with their checks), fill locks and stores.",
            metrics.entry_round_trips(),
        ),
        (
            "listings_db_page_reads_total",
            "Pages read from the database in one statement (page, count and count versions).",
            metrics.page_reads().0,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
        );
    }
    let name = "listings_db_page_read_seconds_total";
    let _ = writeln!(
        out,
        "# HELP {name} Time the page statements took, a connection in hand.\n# TYPE {name} counter\n{name} {:.6}",
        metrics.page_reads().1
    );
    for (name, help, value) in [
        (
            "listings_sqlite_memory_bytes",
            "Memory SQLite holds in this process: page caches, statements, sorts (0 on PostgreSQL).",
            sqlite_memory_bytes(),
        ),
        (
            "process_resident_memory_bytes",
            "Resident memory of the process.",
            resident_memory_bytes(),
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
        );
    }
    render_reads(&mut out, &metrics.reads);
    out
}

/// Where reads went, why not to a replica, and each replica's standing and lag.
fn render_reads(out: &mut String, reads: &super::replicas::ReadRouting) {
    let counts = reads.counts();
    let name = "listings_db_reads_total";
    let _ = writeln!(
        out,
        "# HELP {name} Reads of cache misses, by the database server that answered: the primary, or a replica (host:port).\n# TYPE {name} counter\n{} {}",
        names::PRIMARY_READS,
        counts.primary
    );
    for replica in reads.replicas() {
        let _ = writeln!(
            out,
            "{name}{{server=\"{}\"}} {}",
            label(&replica.name),
            replica.reads()
        );
    }
    let name = names::REPLICA_READS;
    let _ = writeln!(
        out,
        "# HELP {name} Reads of cache misses answered by any replica.\n# TYPE {name} counter\n{name} {}",
        counts.replicas
    );
    let name = "listings_db_replica_fallbacks_total";
    let _ = writeln!(
        out,
        "# HELP {name} Reads that went to the primary although replicas are configured, by why.\n# TYPE {name} counter"
    );
    for reason in super::replicas::Fallback::ALL {
        let _ = writeln!(
            out,
            "{name}{{reason=\"{}\"}} {}",
            reason.name(),
            counts.fallback(reason)
        );
    }
    let states: Vec<_> = reads
        .replicas()
        .iter()
        .map(|replica| (label(&replica.name), replica.state()))
        .collect();
    for (name, help, pick) in [
        (
            "listings_db_replica_serving",
            "1 while the replica may serve reads (answers, is a standby of this primary, within --replica-max-lag).",
            (|state: &super::replicas::ReplicaState| {
                Some(f64::from(u8::from(
                    state.standing == super::replicas::Standing::Serving,
                )))
            }) as fn(&super::replicas::ReplicaState) -> Option<f64>,
        ),
        (
            "listings_db_replica_lag_seconds",
            "How long ago the primary had WAL the replica has not replayed yet.",
            |state| state.lag_seconds,
        ),
        (
            "listings_db_replica_lag_bytes",
            "Bytes of WAL the replica has not replayed yet.",
            |state| state.lag_bytes.map(|bytes| bytes as f64),
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (replica, state) in &states {
            if let Some(value) = pick(state) {
                let _ = writeln!(out, "{name}{{replica=\"{replica}\"}} {value}");
            }
        }
    }
}

/// A label value as the text format wants it.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The counters that add up across processes, read back from a server's `/metrics`
/// text; a sample that is missing counts as 0.
pub fn counts_from_text(text: &str) -> Counts {
    let sample = |name: &str| parse_prometheus_sample(text, name).unwrap_or_default();
    Counts {
        cache: CacheKind::ALL.map(|kind| HitsMisses {
            hits: sample(&per_kind(names::CACHE_HITS, kind)),
            misses: sample(&per_kind(names::CACHE_MISSES, kind)),
        }),
        requests: sample(names::HTTP_REQUESTS),
        db_queries: sample(names::DB_QUERIES),
        reads: super::replicas::ReadCounts {
            primary: sample(names::PRIMARY_READS),
            replicas: sample(names::REPLICA_READS),
            // Replicas need Redis, whose shared counters `cache-metrics` reads instead.
            fallbacks: Default::default(),
        },
    }
}

fn sqlite_memory_bytes() -> u64 {
    // SAFETY: reads SQLite's allocation counter; callable at any time, from any thread.
    let used = unsafe { libsqlite3_sys::sqlite3_memory_used() };
    u64::try_from(used).unwrap_or(0)
}

/// From `/proc/self/statm` (pages); 0 where there is none.
fn resident_memory_bytes() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|statm| statm.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    // SAFETY: sysconf only reads a system constant.
    let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page_size).unwrap_or(4096)
}

/// Reads one sample back from the text format (for `cache-metrics` and tests).
pub fn parse_prometheus_sample(text: &str, name_with_labels: &str) -> Option<u64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            line.strip_prefix(name_with_labels)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_counts_read_back_are_the_counts_rendered() {
        let metrics = Metrics::default();
        for (n, kind) in CacheKind::ALL.into_iter().enumerate() {
            for _ in 0..=n {
                metrics.record_hit(kind);
            }
            for _ in 0..2 * n + 3 {
                metrics.record_miss(kind);
            }
        }
        for _ in 0..5 {
            metrics.record_request(Duration::from_micros(300));
        }
        for _ in 0..11 {
            metrics.record_db_query();
        }
        let counts = counts_from_text(&render(&metrics));
        assert_eq!(counts, metrics.counts());
        assert_ne!(counts, Counts::default());
    }
}
