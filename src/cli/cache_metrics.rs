//! `listings cache-metrics`: the running service's cache numbers, from another process.
//! Redis mode reads them from Redis (server-wide keyspace stats, plus the service's own
//! per-level counters that every server process adds to); the embedded mode asks the
//! running server's `/metrics`.

use std::net::SocketAddr;

use anyhow::Context as _;
use clap::Args;
use serde::Serialize;

use crate::cli::GlobalOpts;
use crate::http_client;
use crate::metrics::{CacheKind, HitsMisses, parse_prometheus_sample};
use crate::services;

#[derive(Debug, Args)]
pub struct Opts {
    /// Print one JSON object instead of a table
    #[arg(long)]
    pub json: bool,
    /// Embedded mode: address of the running server (as `serve --bind`)
    #[arg(long, env = "LISTINGS_BIND", default_value_t = crate::server::DEFAULT_BIND)]
    pub bind: SocketAddr,
}

/// The `--json` form; field names are stable.
#[derive(Debug, Serialize)]
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
    /// Statements the server sent to the database; embedded mode only.
    pub db_queries: Option<u64>,
}

#[derive(Debug, Serialize)]
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

pub async fn run(opts: Opts, global: &GlobalOpts) -> anyhow::Result<()> {
    let report = match &global.redis_url {
        Some(url) => {
            let stats = services::shared_cache_stats(url, &global.cache_prefix).await?;
            let level = |kind| LevelReport::from(stats.count(kind));
            Report {
                cache: "redis",
                source: url.to_string(),
                keyspace_hits: Some(stats.keyspace.hits),
                keyspace_misses: Some(stats.keyspace.misses),
                hit_ratio: Some(stats.keyspace.hit_ratio()),
                view: level(CacheKind::View),
                all_properties: level(CacheKind::AllProperties),
                queries: level(CacheKind::Queries),
                items: level(CacheKind::Items),
                db_queries: None,
            }
        }
        None => {
            let response = http_client::get(opts.bind, "/metrics")
                .await
                .context("cannot read metrics from the running server (is `listings serve` running? use --bind to point at it)")?;
            let status = response.status();
            anyhow::ensure!(
                status.is_success(),
                "the server answered /metrics with {status}"
            );
            let text = String::from_utf8_lossy(response.body());
            let sample = |name: String| parse_prometheus_sample(&text, &name).unwrap_or_default();
            let level = |kind: CacheKind| {
                LevelReport::from(HitsMisses {
                    hits: sample(format!(
                        "listings_cache_hits_total{{kind=\"{}\"}}",
                        kind.name()
                    )),
                    misses: sample(format!(
                        "listings_cache_misses_total{{kind=\"{}\"}}",
                        kind.name()
                    )),
                })
            };
            Report {
                cache: "in-process",
                source: format!("http://{}/metrics", http_client::reachable(opts.bind)),
                keyspace_hits: None,
                keyspace_misses: None,
                hit_ratio: None,
                view: level(CacheKind::View),
                all_properties: level(CacheKind::AllProperties),
                queries: level(CacheKind::Queries),
                items: level(CacheKind::Items),
                db_queries: Some(sample("listings_db_queries_total".into())),
            }
        }
    };
    if opts.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", render_table(&report));
    }
    Ok(())
}

fn percent(ratio: f64) -> String {
    format!("{:.1}%", ratio * 100.0)
}

fn render_table(report: &Report) -> String {
    let mut out = format!("Cache: {} ({})\n", report.cache, report.source);
    if let (Some(hits), Some(misses), Some(ratio)) = (
        report.keyspace_hits,
        report.keyspace_misses,
        report.hit_ratio,
    ) {
        out += &format!(
            "Redis keyspace (server-wide): {hits} hits, {misses} misses, hit ratio {}\n",
            percent(ratio)
        );
    }
    out += &format!(
        "{:<16} {:>10} {:>10} {:>10}\n",
        "level", "hits", "misses", "hit ratio"
    );
    for (name, level) in [
        ("view", &report.view),
        ("all_properties", &report.all_properties),
        ("queries", &report.queries),
        ("items", &report.items),
    ] {
        out += &format!(
            "{name:<16} {:>10} {:>10} {:>10}\n",
            level.hits,
            level.misses,
            percent(level.hit_ratio)
        );
    }
    if let Some(queries) = report.db_queries {
        out += &format!("database queries: {queries}\n");
    }
    out
}
