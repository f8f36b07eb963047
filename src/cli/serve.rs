//! `listings serve`: the HTTP server (see `server` for its limits). Stops on Ctrl-C or
//! SIGTERM after finishing the requests in flight, for at most the shutdown timeout.

use std::net::SocketAddr;

use clap::Args;

use crate::cli::GlobalOpts;
use crate::cli::secret;
use crate::config::{self, HttpLimits};
use crate::config::{AdminToken, AllowedHost, Seconds, Ttl};
use crate::config::{DEFAULT_DATA_TTL, DEFAULT_VIEW_TTL, Settings};
use crate::startup::BoundServer;

#[derive(Debug, Args)]
pub struct Opts {
    /// Address to listen on; port 0 picks a free port (the log line names it)
    #[arg(long, env = "LISTINGS_BIND", default_value_t = crate::config::DEFAULT_BIND)]
    pub bind: SocketAddr,
    /// Address of the operator's dashboard (/dashboard) and /metrics; off unless set
    #[arg(long, env = "LISTINGS_ADMIN_BIND", value_name = "ADDRESS")]
    pub admin_bind: Option<SocketAddr>,
    /// Host names (comma-separated) the admin address answers to besides `localhost`,
    /// `*.localhost` and IP addresses; other Host values get 421, so a web page cannot
    /// reach the dashboard through DNS rebinding
    #[arg(
        long,
        env = "LISTINGS_ADMIN_ALLOWED_HOSTS",
        value_name = "NAMES",
        value_delimiter = ','
    )]
    pub admin_allowed_hosts: Vec<AllowedHost>,
    /// Seconds a whole response stays cached (writes retire it sooner)
    #[arg(long, env = "LISTINGS_VIEW_TTL", value_name = "SECONDS",
          default_value_t = DEFAULT_VIEW_TTL)]
    pub view_ttl: Ttl,
    /// Seconds a query result stays cached (writes retire it sooner)
    #[arg(long, env = "LISTINGS_DATA_TTL", value_name = "SECONDS",
          default_value_t = DEFAULT_DATA_TTL)]
    pub data_ttl: Ttl,
    /// Bearer token required by POST/PUT/PATCH/DELETE; without it the write API is off
    #[arg(long, env = "LISTINGS_ADMIN_TOKEN", value_name = "TOKEN", hide_env_values = true,
          value_parser = secret::parser::<AdminToken>())]
    pub admin_token: Option<AdminToken>,
    /// Seconds a client has to send a request's head (line and headers), from its first
    /// byte or from the connection's start
    #[arg(long, env = "LISTINGS_HEADER_READ_TIMEOUT", value_name = "SECONDS",
          default_value_t = config::DEFAULT_HEADER_READ_TIMEOUT)]
    pub header_read_timeout: Seconds,
    /// Seconds a client has to send a request's body (else 408)
    #[arg(long, env = "LISTINGS_BODY_TIMEOUT", value_name = "SECONDS",
          default_value_t = config::DEFAULT_BODY_TIMEOUT)]
    pub body_timeout: Seconds,
    /// Seconds an idle keep-alive connection stays open
    #[arg(long, env = "LISTINGS_IDLE_TIMEOUT", value_name = "SECONDS",
          default_value_t = config::DEFAULT_IDLE_TIMEOUT)]
    pub idle_timeout: Seconds,
    /// Seconds requests in flight may take to finish after SIGTERM or Ctrl-C; then the
    /// remaining connections are closed and the server exits 0
    #[arg(long, env = "LISTINGS_SHUTDOWN_TIMEOUT", value_name = "SECONDS",
          default_value_t = config::DEFAULT_SHUTDOWN_TIMEOUT)]
    pub shutdown_timeout: Seconds,
    /// Most client connections at once [default: what the file-descriptor limit allows]
    #[arg(long, env = "LISTINGS_MAX_CONNECTIONS", value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: Option<u32>,
}

pub async fn run(opts: Opts, global: &GlobalOpts) -> anyhow::Result<()> {
    let settings = Settings {
        view_ttl: opts.view_ttl.duration(),
        data_ttl: opts.data_ttl.duration(),
        admin_token: opts.admin_token,
        admin_allowed_hosts: opts.admin_allowed_hosts,
        http: HttpLimits {
            header_read_timeout: opts.header_read_timeout.duration(),
            body_timeout: opts.body_timeout.duration(),
            idle_timeout: opts.idle_timeout.duration(),
            shutdown_timeout: opts.shutdown_timeout.duration(),
            max_connections: opts.max_connections.map(|n| n as usize),
        },
        ..global.settings()
    };
    let mut server = BoundServer::build(settings, opts.bind).await?;
    if let Some(admin) = opts.admin_bind {
        server = server.with_admin(admin)?;
    }
    server.run_until_stopped(shutdown_signal()).await;
    tracing::info!("stopped");
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
}
