//! `listings cache-metrics`: the running service's cache numbers, from another process.
//! Redis mode reads them from Redis (server-wide keyspace stats, plus the service's own
//! per-level counters that every server process adds to); the embedded mode asks the
//! running server's `/metrics`.

use std::net::SocketAddr;

use anyhow::Context as _;
use clap::Args;
use serde::Serialize;

use crate::cli::{GlobalOpts, cache_watch};
use crate::http_client;
use crate::metrics::{CacheKind, Counts, HitsMisses, parse_prometheus_sample};
use crate::services;

#[derive(Debug, Args)]
pub struct Opts {
    /// Print one JSON object instead of a table
    #[arg(long, conflicts_with = "watch")]
    pub json: bool,
    /// Refresh once a second until `q` or Ctrl-C, with the hit ratios as small charts;
    /// one plain line per second when stdout is not a terminal
    #[arg(long)]
    pub watch: bool,
    /// Embedded mode: address of the running server (as `serve --bind`)
    #[arg(long, env = "LISTINGS_BIND", default_value_t = crate::server::DEFAULT_BIND)]
    pub bind: SocketAddr,
}

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
        stats: Box<services::SharedCacheStats>,
        url: String,
    },
    Server(SocketAddr),
}

impl Source {
    pub fn new(opts: &Opts, global: &GlobalOpts) -> anyhow::Result<Source> {
        Ok(match &global.redis_url {
            Some(url) => Source::Redis {
                stats: Box::new(services::SharedCacheStats::new(url, &global.cache_prefix)?),
                url: url.to_string(),
            },
            None => Source::Server(opts.bind),
        })
    }

    pub async fn read(&self) -> anyhow::Result<Report> {
        match self {
            Source::Redis { stats, url } => {
                let stats = stats.read().await?;
                Ok(Report::new(
                    "redis",
                    url.clone(),
                    Some(stats.keyspace),
                    stats.shared,
                ))
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
    let text = String::from_utf8_lossy(response.body());
    let sample = |name: &str| parse_prometheus_sample(&text, name).unwrap_or_default();
    let counts = Counts {
        cache: CacheKind::ALL.map(|kind| HitsMisses {
            hits: sample(&format!(
                "listings_cache_hits_total{{kind=\"{}\"}}",
                kind.name()
            )),
            misses: sample(&format!(
                "listings_cache_misses_total{{kind=\"{}\"}}",
                kind.name()
            )),
        }),
        requests: sample("listings_http_requests_total"),
        db_queries: sample("listings_db_queries_total"),
    };
    Ok(Report::new(
        "in-process",
        format!("http://{}/metrics", http_client::reachable(bind)),
        None,
        counts,
    ))
}

pub async fn run(opts: Opts, global: &GlobalOpts) -> anyhow::Result<()> {
    let source = Source::new(&opts, global)?;
    if opts.watch {
        return cache_watch::run(&source).await;
    }
    let report = source.read().await?;
    if opts.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", render_table(&report));
    }
    Ok(())
}

pub fn percent(ratio: f64) -> String {
    format!("{:.1}%", ratio * 100.0)
}

fn render_table(report: &Report) -> String {
    let mut out = format!("Cache: {} ({})\n", report.cache, report.source);
    if let Some(keyspace) = report.keyspace_line() {
        out += &keyspace;
        out.push('\n');
    }
    out += &format!(
        "{:<16} {:>10} {:>10} {:>10}\n",
        "level", "hits", "misses", "hit ratio"
    );
    for (name, level) in report.levels() {
        out += &format!(
            "{name:<16} {:>10} {:>10} {:>10}\n",
            level.hits,
            level.misses,
            percent(level.hit_ratio)
        );
    }
    out += &format!(
        "requests: {}, database queries: {} ({})\n",
        report.requests,
        report.db_queries,
        report.scope()
    );
    out
}
