//! `listings serve`: the HTTP server. Stops on Ctrl-C or SIGTERM after finishing the
//! requests in flight.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use tokio::net::TcpListener;

use crate::app::{App, Settings};
use crate::cli::{CacheOpts, DatabaseOpts};
use crate::config::{AdminToken, DatabaseUrl, Ttl};
use crate::db::migrations;
use crate::http::build_router;
use crate::services;

#[derive(Debug, Args)]
pub struct Opts {
    /// Address to listen on; port 0 picks a free port (the log line names it)
    #[arg(long, env = "LISTINGS_BIND", default_value = "127.0.0.1:8000")]
    pub bind: SocketAddr,
    /// Seconds a whole response stays cached (writes retire it sooner)
    #[arg(
        long,
        env = "LISTINGS_VIEW_TTL",
        value_name = "SECONDS",
        default_value = "900"
    )]
    pub view_ttl: Ttl,
    /// Seconds a query result stays cached (writes retire it sooner)
    #[arg(
        long,
        env = "LISTINGS_DATA_TTL",
        value_name = "SECONDS",
        default_value = "3600"
    )]
    pub data_ttl: Ttl,
    /// Largest number of database connections
    #[arg(long, env = "LISTINGS_DB_POOL_SIZE", value_name = "N", default_value = "10",
          value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub db_pool_size: u16,
    /// Bearer token required by POST/PUT/PATCH/DELETE; without it the write API is off
    #[arg(
        long,
        env = "LISTINGS_ADMIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<AdminToken>,
    #[command(flatten)]
    pub db: DatabaseOpts,
    #[command(flatten)]
    pub cache: CacheOpts,
}

pub async fn run(opts: Opts) -> anyhow::Result<()> {
    let database_url = opts.db.url();
    prepare_database(&database_url).await?;
    let settings = Settings {
        database_url,
        redis_url: opts.cache.redis_url,
        cache_prefix: opts.cache.cache_prefix,
        view_ttl: opts.view_ttl.0,
        data_ttl: opts.data_ttl.0,
        max_db_connections: usize::from(opts.db_pool_size),
        admin_token: opts.admin_token,
    };
    let mut app = App::connect(settings).await?;
    app.watch_sqlite_writes().await?;
    let listener = TcpListener::bind(opts.bind)
        .await
        .with_context(|| format!("cannot listen on {}", opts.bind))?;
    let address = listener
        .local_addr()
        .context("cannot read the bound address")?;
    let app = Arc::new(app);
    // Listen for database changes before announcing: its first connect retires the
    // shared cache, which must not happen under requests already being served.
    services::change_listener::start(app.clone()).await?;
    tracing::info!(
        "listening on http://{address}; database: {}; cache: {}",
        app.settings.database_url,
        app.cache.describe()
    );
    axum::serve(listener, build_router(app))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("the server failed")?;
    tracing::info!("stopped");
    Ok(())
}

/// The embedded database creates and migrates itself so a fresh machine just works;
/// PostgreSQL is migrated by the operator (`listings migrate`), so refuse to serve
/// against an out-of-date schema rather than fail every request.
async fn prepare_database(url: &DatabaseUrl) -> anyhow::Result<()> {
    match url {
        DatabaseUrl::Sqlite(_) => {
            for name in migrations::run_pending(url).await? {
                tracing::info!("applied migration {name}");
            }
        }
        DatabaseUrl::Postgres(_) => {
            let pending = migrations::pending(url).await?;
            if !pending.is_empty() {
                anyhow::bail!(
                    "{} has {} pending migration(s) ({}); run `listings migrate` first",
                    url.target(),
                    pending.len(),
                    pending.join(", ")
                );
            }
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}
