//! The `listings` command line: one `Command` enum, one file per subcommand, each with
//! its `Opts` and `run`. Doc comments are the `--help` text.

pub mod cache_metrics;
mod cache_report;
mod cache_watch;
pub mod completions;
pub mod create_property;
pub mod delete_property;
pub mod healthcheck;
pub mod import;
pub mod list_properties;
pub mod migrate;
mod progress;
pub mod seed;
pub mod serve;
pub mod update_property;

mod secret;
mod terminal;

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config::{ByteSize, DatabaseUrl, KeyPrefix, RedisUrl, ReplicaUrl, Seconds};
use crate::config::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_KEEPALIVE, DEFAULT_POOL_TIMEOUT, DEFAULT_REPLICA_MAX_LAG,
    DEFAULT_REPLICA_MAX_LAG_BYTES, DEFAULT_STATEMENT_TIMEOUT, DbSettings, default_pool_size,
};
use crate::config::{ReplicaSettings, Settings};
use crate::domain::{PropertyInput, field_help};
use crate::logging::LogFormat;

/// Property listings with two cache levels that are never stale.
///
/// Without DATABASE_URL the data lives in ./listings.sqlite3; without REDIS_URL the
/// cache is in-process. A .env file in the working directory is read if present.
#[derive(Debug, Parser)]
#[command(name = "listings", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOpts,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server.
    Serve(serve::Opts),
    /// Apply pending database migrations.
    Migrate(migrate::Opts),
    /// Add one property and print it as JSON.
    CreateProperty(create_property::Opts),
    /// Search properties, as GET /properties/ does.
    ListProperties(list_properties::Opts),
    /// Change fields of one property and print it as JSON.
    UpdateProperty(update_property::Opts),
    /// Delete one property.
    DeleteProperty(delete_property::Opts),
    /// Import properties from a CSV or JSON-lines file, all or nothing.
    Import(import::Opts),
    /// Add generated listings, for demos and benchmarks.
    Seed(seed::Opts),
    /// Show cache hits and misses of the running service.
    CacheMetrics(cache_metrics::Opts),
    /// Exit 0 if the server at --bind answers /health (for container healthchecks).
    Healthcheck(healthcheck::Opts),
    /// Print a shell completion script.
    Completions(completions::Opts),
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let global = &cli.global;
    match cli.command {
        Command::Serve(opts) => serve::run(opts, global).await,
        Command::Migrate(opts) => migrate::run(opts, global).await,
        Command::CreateProperty(opts) => create_property::run(opts, global).await,
        Command::ListProperties(opts) => list_properties::run(opts, global).await,
        Command::UpdateProperty(opts) => update_property::run(opts, global).await,
        Command::DeleteProperty(opts) => delete_property::run(opts, global).await,
        Command::Import(opts) => import::run(opts, global).await,
        Command::Seed(opts) => seed::run(opts, global).await,
        Command::CacheMetrics(opts) => cache_metrics::run(opts, global).await,
        Command::Healthcheck(opts) => healthcheck::run(opts).await,
        Command::Completions(opts) => {
            completions::run(opts);
            Ok(())
        }
    }
}

/// Optional settings that an empty environment variable switches off, as operators
/// expect from `REDIS_URL=` in a Compose file.
const OPTIONAL_SETTINGS: [&str; 4] = [
    "DATABASE_URL",
    "DATABASE_REPLICA_URLS",
    "REDIS_URL",
    "LISTINGS_ADMIN_TOKEN",
];

/// Treats an empty optional setting as unset. Call before any thread starts.
pub fn unset_empty_settings() {
    for name in OPTIONAL_SETTINGS {
        if std::env::var_os(name).is_some_and(|value| value.is_empty()) {
            // SAFETY: called first thing in main, before the runtime or any other
            // thread exists, so nothing reads the environment concurrently.
            unsafe { std::env::remove_var(name) };
        }
    }
}

/// Settings every command shares: where the data and the cache live, the database's
/// limits, and the log format. They may be given before or after the subcommand.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Shared by every command")]
pub struct GlobalOpts {
    /// postgres://user:password@host/db, or a SQLite file path [default: listings.sqlite3]
    #[arg(long, env = "DATABASE_URL", value_name = "URL", global = true,
          hide_env_values = true, value_parser = secret::parser::<DatabaseUrl>())]
    pub database_url: Option<DatabaseUrl>,

    /// A streaming replica of DATABASE_URL that may serve cache misses once it has
    /// replayed every acknowledged write (repeat the flag; in the variable, separate
    /// URLs with commas); needs PostgreSQL and Redis
    #[arg(long = "database-replica-url", env = "DATABASE_REPLICA_URLS", value_name = "URL",
          global = true, hide_env_values = true, value_delimiter = ',',
          value_parser = secret::parser::<ReplicaUrl>())]
    pub database_replica_urls: Vec<ReplicaUrl>,

    /// Seconds a replica's replay may trail the primary before misses skip it
    #[arg(long, env = "LISTINGS_REPLICA_MAX_LAG", value_name = "SECONDS", global = true,
          default_value_t = DEFAULT_REPLICA_MAX_LAG)]
    pub replica_max_lag: Seconds,

    /// WAL a replica's replay may trail the primary by before misses skip it
    #[arg(long, env = "LISTINGS_REPLICA_MAX_LAG_BYTES", value_name = "SIZE", global = true,
          default_value_t = DEFAULT_REPLICA_MAX_LAG_BYTES)]
    pub replica_max_lag_bytes: ByteSize,

    /// redis://[:password@]host:6379/0; without it the cache is in-process
    #[arg(long, env = "REDIS_URL", value_name = "URL", global = true,
          hide_env_values = true, value_parser = secret::parser::<RedisUrl>())]
    pub redis_url: Option<RedisUrl>,

    /// Prefix of every Redis key, so several deployments can share one Redis
    #[arg(long, env = "LISTINGS_CACHE_PREFIX", value_name = "PREFIX", global = true,
          default_value_t = KeyPrefix::default())]
    pub cache_prefix: KeyPrefix,

    /// Most memory the in-process cache holds (keys and values; used without Redis)
    #[arg(long, env = "LISTINGS_CACHE_SIZE", value_name = "SIZE", global = true,
          default_value_t = ByteSize::DEFAULT_CACHE_SIZE)]
    pub cache_size: ByteSize,

    /// Most memory the near-cache holds: ready responses each server keeps in front of
    /// the cache
    #[arg(long, env = "LISTINGS_NEAR_CACHE_SIZE", value_name = "SIZE", global = true,
          default_value_t = ByteSize::DEFAULT_NEAR_CACHE_SIZE)]
    pub near_cache_size: ByteSize,

    /// Most database connections per process for reads, beside those for writes (four
    /// on PostgreSQL, one on SQLite) [default: one per core, at least 2, for a database
    /// on this machine (SQLite, PostgreSQL at a loopback address or a socket); 10
    /// for PostgreSQL elsewhere]
    #[arg(long, env = "LISTINGS_DB_POOL_SIZE", value_name = "N", global = true,
          value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub db_pool_size: Option<u16>,

    /// Seconds allowed to open one database connection
    #[arg(long, env = "LISTINGS_DB_CONNECT_TIMEOUT", value_name = "SECONDS", global = true,
          default_value_t = DEFAULT_CONNECT_TIMEOUT)]
    pub db_connect_timeout: Seconds,

    /// Seconds a request waits for a pooled database connection
    #[arg(long, env = "LISTINGS_DB_POOL_TIMEOUT", value_name = "SECONDS", global = true,
          default_value_t = DEFAULT_POOL_TIMEOUT)]
    pub db_pool_timeout: Seconds,

    /// Seconds a statement may run (PostgreSQL statement_timeout; SQLite busy timeout);
    /// a request waits no longer for the database's answers
    #[arg(long, env = "LISTINGS_DB_STATEMENT_TIMEOUT", value_name = "SECONDS", global = true,
          default_value_t = DEFAULT_STATEMENT_TIMEOUT)]
    pub db_statement_timeout: Seconds,

    /// Seconds of silence before TCP keepalive probes a PostgreSQL connection, and
    /// between probes
    #[arg(long, env = "LISTINGS_DB_KEEPALIVE", value_name = "SECONDS", global = true,
          default_value_t = DEFAULT_KEEPALIVE)]
    pub db_keepalive: Seconds,

    /// Threads that run requests and background work [default: one per core]
    #[arg(long, env = "LISTINGS_WORKERS", value_name = "N", global = true,
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: Option<u16>,

    /// Log lines as text, or as one JSON object per line for log shippers
    #[arg(long, env = "LISTINGS_LOG_FORMAT", value_name = "FORMAT", global = true,
          value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl GlobalOpts {
    pub fn database_url(&self) -> DatabaseUrl {
        self.database_url.clone().unwrap_or_default()
    }

    pub fn db_settings(&self) -> DbSettings {
        DbSettings {
            max_connections: self
                .db_pool_size
                .map_or_else(|| default_pool_size(&self.database_url()), usize::from),
            replica_max_connections: self.db_pool_size.map(usize::from),
            connect_timeout: self.db_connect_timeout.duration(),
            pool_timeout: self.db_pool_timeout.duration(),
            statement_timeout: self.db_statement_timeout.duration(),
            keepalive: self.db_keepalive.duration(),
        }
    }

    /// Settings for commands that do not serve (TTLs and HTTP limits only matter to the
    /// server, which overrides them).
    pub fn settings(&self) -> Settings {
        Settings {
            database_url: self.database_url(),
            redis_url: self.redis_url.clone(),
            cache_prefix: self.cache_prefix.clone(),
            cache_size: self.cache_size,
            near_cache_size: self.near_cache_size,
            db: self.db_settings(),
            replicas: ReplicaSettings {
                urls: self.database_replica_urls.clone(),
                max_lag: self.replica_max_lag.duration(),
                max_lag_bytes: self.replica_max_lag_bytes.bytes(),
            },
            ..Settings::default()
        }
    }
}

/// How long a command waits, before exiting, to learn whether a write the database did
/// not confirm was applied (and to tell the servers if it was).
const SETTLE_UNCONFIRMED_WRITES: Duration = Duration::from_secs(30);

/// Called by write commands before they exit: the task that would tell the servers
/// about a late commit dies with the process.
pub async fn settle_unconfirmed_writes(app: &crate::service::App) {
    if !app
        .settle_unconfirmed_writes(SETTLE_UNCONFIRMED_WRITES)
        .await
    {
        tracing::error!(
            "a write the database did not confirm may still be applied; if it is, servers sharing this cache may show the old data until their TTL"
        );
    }
}

/// The fields update-property may change, as flags; validated by the domain types, so
/// the command applies the API's rules.
#[derive(Debug, Clone, Args)]
pub struct PropertyFieldOpts {
    #[arg(long, help = field_help::title())]
    pub title: Option<String>,
    #[arg(long, help = field_help::description())]
    pub description: Option<String>,
    #[arg(long, allow_hyphen_values = true, help = field_help::price())]
    pub price: Option<String>,
    #[arg(long, help = field_help::location())]
    pub location: Option<String>,
}

impl PropertyFieldOpts {
    pub fn input(&self) -> PropertyInput<'_> {
        PropertyInput {
            title: self.title.as_deref(),
            description: self.description.as_deref(),
            price: self.price.as_deref(),
            location: self.location.as_deref(),
        }
    }
}

/// Validation errors as the CLI reports them: each field named by its flag.
pub fn flag_errors(errors: crate::domain::ValidationErrors) -> anyhow::Error {
    let described: Vec<String> = errors
        .0
        .iter()
        .map(|e| match e.field {
            // Not one field: a rule about the set of them.
            "fields" => e.rule.clone(),
            field => format!("--{}: {}", field.replace('_', "-"), e.rule),
        })
        .collect();
    anyhow::anyhow!("{}", described.join("; "))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn verify_cli() {
        super::Cli::command().debug_assert();
    }
}
