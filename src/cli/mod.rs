//! The `listings` command line: one `Command` enum, one file per subcommand, each with
//! its `Opts` and `run`. Doc comments are the `--help` text.

pub mod cache_metrics;
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

use clap::{Args, Parser, Subcommand};

use crate::app::{DEFAULT_DATA_TTL, DEFAULT_VIEW_TTL, Settings};
use crate::config::{DatabaseUrl, KeyPrefix, RedisUrl};
use crate::domain::PropertyInput;

/// Property listings with two cache levels that are never stale.
///
/// Without DATABASE_URL the data lives in ./listings.sqlite3; without REDIS_URL the
/// cache is in-process. A .env file in the working directory is read if present.
#[derive(Debug, Parser)]
#[command(name = "listings", version, propagate_version = true)]
pub struct Cli {
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
    match cli.command {
        Command::Serve(opts) => serve::run(opts).await,
        Command::Migrate(opts) => migrate::run(opts).await,
        Command::CreateProperty(opts) => create_property::run(opts).await,
        Command::ListProperties(opts) => list_properties::run(opts).await,
        Command::UpdateProperty(opts) => update_property::run(opts).await,
        Command::DeleteProperty(opts) => delete_property::run(opts).await,
        Command::Import(opts) => import::run(opts).await,
        Command::Seed(opts) => seed::run(opts).await,
        Command::CacheMetrics(opts) => cache_metrics::run(opts).await,
        Command::Healthcheck(opts) => healthcheck::run(opts).await,
        Command::Completions(opts) => {
            completions::run(opts);
            Ok(())
        }
    }
}

/// Optional settings that an empty environment variable switches off, as operators
/// expect from `REDIS_URL=` in a Compose file.
const OPTIONAL_SETTINGS: [&str; 3] = ["DATABASE_URL", "REDIS_URL", "LISTINGS_ADMIN_TOKEN"];

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

/// Where the data lives.
#[derive(Debug, Clone, Args)]
pub struct DatabaseOpts {
    /// postgres://user:password@host/db, or a SQLite file path [default: listings.sqlite3]
    #[arg(long, env = "DATABASE_URL", value_name = "URL")]
    pub database_url: Option<DatabaseUrl>,
}

impl DatabaseOpts {
    pub fn url(&self) -> DatabaseUrl {
        self.database_url.clone().unwrap_or_default()
    }
}

/// Where the cache lives.
#[derive(Debug, Clone, Args)]
pub struct CacheOpts {
    /// redis://host:6379/0; without it the cache is in-process
    #[arg(long, env = "REDIS_URL", value_name = "URL")]
    pub redis_url: Option<RedisUrl>,

    /// Prefix of every Redis key, so several deployments can share one Redis
    #[arg(
        long,
        env = "LISTINGS_CACHE_PREFIX",
        value_name = "PREFIX",
        default_value = "listings:"
    )]
    pub cache_prefix: KeyPrefix,
}

/// A property's fields as flags, for create-property and update-property. Each is
/// validated by the domain types, so both commands apply the API's rules.
#[derive(Debug, Clone, Args)]
pub struct PropertyFieldOpts {
    /// Title, 1 to 200 characters
    #[arg(long)]
    pub title: Option<String>,
    /// Free text
    #[arg(long)]
    pub description: Option<String>,
    /// Price with at most 2 decimals, e.g. 500000.00
    #[arg(long, allow_hyphen_values = true)]
    pub price: Option<String>,
    /// Location, 1 to 100 characters
    #[arg(long)]
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

/// Settings for commands that do not serve (TTLs only matter to the server).
pub fn settings(db: &DatabaseOpts, cache: &CacheOpts) -> Settings {
    Settings {
        database_url: db.url(),
        redis_url: cache.redis_url.clone(),
        cache_prefix: cache.cache_prefix.clone(),
        view_ttl: DEFAULT_VIEW_TTL,
        data_ttl: DEFAULT_DATA_TTL,
        max_db_connections: 2,
        admin_token: None,
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn verify_cli() {
        super::Cli::command().debug_assert();
    }
}
