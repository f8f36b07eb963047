//! `listings cache-metrics`: the running service's cache numbers, from another process.
//! Redis mode reads them from Redis (server-wide keyspace stats, plus the service's own
//! per-level counters that every server process adds to); the embedded mode asks the
//! running server's `/metrics`.

use std::net::SocketAddr;

use clap::Args;

use crate::cli::GlobalOpts;
use crate::cli::cache_report::{Report, Source, percent};
use crate::cli::cache_watch;

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
    #[arg(long, env = "LISTINGS_BIND", default_value_t = crate::config::DEFAULT_BIND)]
    pub bind: SocketAddr,
}

pub async fn run(opts: Opts, global: &GlobalOpts) -> anyhow::Result<()> {
    let source = Source::new(opts.bind, global)?;
    if opts.watch {
        return cache_watch::run(&source).await;
    }
    let report = source.read().await?;
    let settings = global.settings();
    let transport = crate::service::probe_transport(&settings.database_url, &settings.db).await;
    let database = Database {
        target: settings.database_url.target(),
        transport: transport.as_ref().ok().cloned(),
        error: transport.err(),
    };
    let replicas = replica_reports(&settings, &report).await;
    if opts.json {
        let mut json = serde_json::to_value(&report)?;
        if let Some(fields) = json.as_object_mut() {
            fields.insert("database".to_owned(), serde_json::to_value(&database)?);
            fields.insert("replicas".to_owned(), serde_json::to_value(&replicas)?);
        }
        println!("{json}");
    } else {
        print!("{}", render_table(&report));
        println!("{}", database.line());
        for replica in &replicas {
            println!("{}", replica.line());
        }
    }
    Ok(())
}

/// One replica as a round of checks from this process finds it.
#[derive(serde::Serialize)]
struct ReplicaReport {
    name: String,
    #[serde(flatten)]
    state: Option<crate::metrics::replicas::ReplicaState>,
    /// Why it could not be checked at all.
    error: Option<String>,
    /// Every server's reads on it (Redis mode).
    reads: Option<u64>,
}

impl ReplicaReport {
    fn line(&self) -> String {
        let Some(state) = &self.state else {
            let error = self.error.as_deref().unwrap_or("not checked");
            return format!("replica {}: cannot check: {error}", self.name);
        };
        let mut line = format!("replica {}: {}", self.name, state.standing.name());
        if let Some(why) = &state.why {
            line += &format!(" ({why})");
        }
        if let (Some(replayed), Some(bytes)) = (&state.replayed, state.lag_bytes) {
            line += &format!(", replayed {replayed}, {bytes} bytes of WAL behind the primary");
        }
        if let Some(reads) = self.reads {
            line += &format!(", {reads} reads");
        }
        line
    }
}

async fn replica_reports(
    settings: &crate::config::Settings,
    report: &Report,
) -> Vec<ReplicaReport> {
    if settings.replicas.urls.is_empty() {
        return Vec::new();
    }
    let probed =
        crate::service::probe_replicas(&settings.database_url, &settings.db, &settings.replicas)
            .await;
    match probed {
        Ok(states) => states
            .into_iter()
            .map(|(name, state)| ReplicaReport {
                reads: report.replica_reads.get(&name).copied(),
                name,
                state: Some(state),
                error: None,
            })
            .collect(),
        Err(error) => settings
            .replicas
            .urls
            .iter()
            .map(|url| ReplicaReport {
                reads: report.replica_reads.get(url.url().target()).copied(),
                name: url.url().target().to_owned(),
                state: None,
                error: Some(error.clone()),
            })
            .collect(),
    }
}

/// The database the service uses, and how a connection to it travels.
#[derive(serde::Serialize)]
struct Database {
    target: String,
    /// `encrypted (TLSv1.3, sslmode=…)`, `not encrypted (sslmode=…)` or `a local file`.
    transport: Option<String>,
    /// Why no connection could be made, if none could.
    error: Option<String>,
}

impl Database {
    fn line(&self) -> String {
        match (&self.transport, &self.error) {
            (Some(transport), _) => format!("Database: {}, {transport}", self.target),
            (None, Some(error)) => format!("Database: {}, cannot connect: {error}", self.target),
            (None, None) => format!("Database: {}", self.target),
        }
    }
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
    out += &report.reads.line();
    out.push('\n');
    out
}
