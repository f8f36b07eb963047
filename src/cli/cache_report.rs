//! The cache numbers of a running service, as `cache-metrics` prints them once and
//! `--watch` redraws them: where they are read (Redis or the server's `/metrics`) and
//! the report they make.

use std::net::SocketAddr;

use anyhow::Context as _;
use serde::Serialize;

use crate::cli::GlobalOpts;
use crate::http_client;
use crate::metrics::{self, CacheKind, Counts, HitsMisses};
use crate::service;

/// The `--json` form; field names are stable.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// "redis" or "in-process"
    pub cache: &'static str,
    /// Where the numbers came from.
    pub source: String,
    /// Redis `INFO stats`, server-wide; null in the embedded mode.
    pub keyspace_hits: Option<u64>,
    pub keyspace_misses: Option<u64>,
    /// keyspace_hits / (keyspace_hits + keyspace_misses), 0 when both are 0.
    pub hit_ratio: Option<f64>,
    /// Whole responses.
    pub view: LevelReport,
    /// The first page of the default listing.
    pub all_properties: LevelReport,
    /// Every other search.
    pub queries: LevelReport,
    /// Single properties.
    pub items: LevelReport,
    /// HTTP requests answered: by the server asked (embedded mode), or by every server
    /// together (Redis mode).
    pub requests: u64,
    /// Statements sent to the database, counted the same way.
    pub db_queries: u64,
    /// Reads of cache misses by where they went, and why not to a replica.
    pub reads: ReadsReport,
    /// Redis mode: every server's reads per replica (`host:port`).
    pub replica_reads: std::collections::BTreeMap<String, u64>,
    /// The counters above, for what changed between two reports.
    #[serde(skip)]
    pub counts: Counts,
}

impl Report {
    /// The report of `counts`, with Redis's server-wide `keyspace` numbers if any.
    pub fn new(
        cache: &'static str,
        source: String,
        keyspace: Option<HitsMisses>,
        counts: Counts,
    ) -> Report {
        let level = |kind| LevelReport::from(counts.kind(kind));
        Report {
            cache,
            source,
            keyspace_hits: keyspace.map(|k| k.hits),
            keyspace_misses: keyspace.map(|k| k.misses),
            hit_ratio: keyspace.map(|k| k.hit_ratio()),
            view: level(CacheKind::View),
            all_properties: level(CacheKind::AllProperties),
            queries: level(CacheKind::Queries),
            items: level(CacheKind::Items),
            requests: counts.requests,
            db_queries: counts.db_queries,
            reads: ReadsReport::from(counts.reads),
            replica_reads: Default::default(),
            counts,
        }
    }

    /// Whose requests and queries these are: Redis mode sums every server's.
    pub fn scope(&self) -> &'static str {
        if self.keyspace_hits.is_some() {
            "all servers"
        } else {
            "this server"
        }
    }

    /// Redis mode: the server-wide keyspace numbers, as one line.
    pub fn keyspace_line(&self) -> Option<String> {
        let (hits, misses, ratio) = (self.keyspace_hits?, self.keyspace_misses?, self.hit_ratio?);
        Some(format!(
            "Redis keyspace (server-wide): {hits} hits, {misses} misses, hit ratio {}",
            percent(ratio)
        ))
    }

    pub fn levels(&self) -> [(&'static str, &LevelReport); 4] {
        [
            ("view", &self.view),
            ("all_properties", &self.all_properties),
            ("queries", &self.queries),
            ("items", &self.items),
        ]
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct ReadsReport {
    pub primary: u64,
    pub replicas: u64,
    /// Reads that went to the primary although replicas are configured, by reason.
    pub fallbacks: std::collections::BTreeMap<&'static str, u64>,
}

impl From<metrics::replicas::ReadCounts> for ReadsReport {
    fn from(counts: metrics::replicas::ReadCounts) -> Self {
        ReadsReport {
            primary: counts.primary,
            replicas: counts.replicas,
            fallbacks: metrics::replicas::Fallback::ALL
                .into_iter()
                .map(|reason| (reason.name(), counts.fallback(reason)))
                .collect(),
        }
    }
}

impl ReadsReport {
    /// `reads: primary 10, replicas 90; to the primary instead of a replica: lagging 3`.
    pub fn line(&self) -> String {
        let fallbacks: Vec<String> = self
            .fallbacks
            .iter()
            .filter(|(_, count)| **count > 0)
            .map(|(reason, count)| format!("{reason} {count}"))
            .collect();
        let mut line = format!(
            "reads: primary {}, replicas {}",
            self.primary, self.replicas
        );
        if !fallbacks.is_empty() {
            line += &format!(
                "; to the primary instead of a replica: {}",
                fallbacks.join(", ")
            );
        }
        line
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct LevelReport {
    pub hits: u64,
    pub misses: u64,
    pub hit_ratio: f64,
}

impl From<HitsMisses> for LevelReport {
    fn from(counts: HitsMisses) -> Self {
        LevelReport {
            hits: counts.hits,
            misses: counts.misses,
            hit_ratio: counts.hit_ratio(),
        }
    }
}

/// Where the numbers are read: Redis (every server's), or the running server.
pub enum Source {
    Redis {
        stats: Box<service::SharedCacheStats>,
        url: String,
    },
    Server(SocketAddr),
}

impl Source {
    pub fn new(bind: SocketAddr, global: &GlobalOpts) -> anyhow::Result<Source> {
        Ok(match &global.redis_url {
            Some(url) => Source::Redis {
                stats: Box::new(service::SharedCacheStats::new(url, &global.cache_prefix)?),
                url: url.to_string(),
            },
            None => Source::Server(bind),
        })
    }

    pub async fn read(&self) -> anyhow::Result<Report> {
        match self {
            Source::Redis { stats, url } => {
                let stats = stats.read().await?;
                let mut report =
                    Report::new("redis", url.clone(), Some(stats.keyspace), stats.shared);
                report.replica_reads = stats.replica_reads.into_iter().collect();
                Ok(report)
            }
            Source::Server(bind) => read_server(*bind).await,
        }
    }
}

async fn read_server(bind: SocketAddr) -> anyhow::Result<Report> {
    let response = http_client::get(bind, "/metrics").await.context(
        "cannot read metrics from the running server (is `listings serve` running? use --bind to point at it)",
    )?;
    let status = response.status();
    anyhow::ensure!(
        status.is_success(),
        "the server answered /metrics with {status}"
    );
    let counts = metrics::counts_from_prometheus(&String::from_utf8_lossy(response.body()));
    Ok(Report::new(
        "in-process",
        format!("http://{}/metrics", http_client::reachable(bind)),
        None,
        counts,
    ))
}

pub fn percent(ratio: f64) -> String {
    format!("{:.1}%", ratio * 100.0)
}
