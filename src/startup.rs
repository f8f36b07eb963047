//! The composition root: everything `listings serve` runs, built in one step (the
//! migrated database and its pool, the cache, the SQLite change probe or the
//! PostgreSQL change listener, the bound listener, the router). The tests build their
//! servers with this same function.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::config::Settings;
use crate::http::body::MAX_BODY_BYTES;
use crate::http::build_router;
use crate::service::change_listener;
use crate::service::{App, AppState};
use crate::{dashboard, server};

/// The admin address serves a few operators, not the public.
const ADMIN_CONNECTIONS: usize = 64;

pub struct BoundServer {
    app: AppState,
    listener: TcpListener,
    address: SocketAddr,
    max_connections: usize,
    /// The operator's address (dashboard, metrics), when turned on.
    admin: Option<(TcpListener, SocketAddr)>,
}

/// Listens on `bind`; the bound address tells which port 0 picked. `role` names the
/// address in errors (`admin`; none for the main one).
fn listen(bind: SocketAddr, role: Option<&str>) -> anyhow::Result<(TcpListener, SocketAddr)> {
    let listener = server::listen(bind).with_context(|| match role {
        Some(role) => format!("cannot listen on the {role} address {bind}"),
        None => format!("cannot listen on {bind}"),
    })?;
    let role = role.map(|role| format!("{role} ")).unwrap_or_default();
    let address = listener
        .local_addr()
        .with_context(|| format!("cannot read the bound {role}address"))?;
    Ok((listener, address))
}

impl BoundServer {
    /// Binds `bind` (port 0 picks a free port, see [`BoundServer::address`]) and starts
    /// the background work; nothing is served until [`BoundServer::run_until_stopped`].
    pub async fn build(settings: Settings, bind: SocketAddr) -> anyhow::Result<BoundServer> {
        let app = App::connect_server(settings).await?;
        let max_connections = server::connection_cap(
            app.settings.http.max_connections,
            app.settings.db.max_connections,
        );
        let (listener, address) = listen(bind, None)?;
        let app = Arc::new(app);
        // Listen for database changes before serving: the listener's first connect
        // retires the shared cache, which must not happen under requests being served.
        change_listener::start(app.clone()).await?;
        app.start_replica_checks().await;
        Ok(BoundServer {
            app,
            listener,
            address,
            max_connections,
            admin: None,
        })
    }

    /// Also serves the dashboard and `/metrics` on `bind` (see `dashboard`).
    pub fn with_admin(mut self, bind: SocketAddr) -> anyhow::Result<BoundServer> {
        self.admin = Some(listen(bind, Some("admin"))?);
        Ok(self)
    }

    pub fn admin_address(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|(_, address)| *address)
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The state the router serves, for tests that call services or the router directly.
    pub fn app(&self) -> &AppState {
        &self.app
    }

    /// Serves until `shutdown` resolves, then drains (see `server`).
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) {
        dashboard::announce(self.admin_address());
        let transport = self.app.database_transport().await;
        tracing::info!(
            "listening on http://{}; database: {} ({}), {} read connections{}; cache: {}; at most {} connections",
            self.address,
            self.app.settings.database_url,
            transport.as_deref().unwrap_or("not answering yet"),
            self.app.settings.db.max_connections,
            replicas_line(&self.app),
            self.app.cache_description(),
            self.max_connections
        );
        let limits = self.app.settings.http;
        let served = move |access_log| server::Served {
            limits,
            max_body: MAX_BODY_BYTES as u64,
            access_log,
        };
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let admin = self.admin.map(|(listener, _)| {
            let router = dashboard::router(self.app.clone(), self.address);
            let mut stopped = stopped.clone();
            // The dashboard writes no access lines.
            tokio::spawn(server::serve(
                listener,
                router,
                served(false),
                ADMIN_CONNECTIONS,
                self.app.metrics.clone(),
                async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                },
            ))
        });
        let metrics = self.app.metrics.clone();
        let router = build_router(self.app);
        server::serve(
            self.listener,
            router,
            served(true),
            self.max_connections,
            metrics,
            async {
                shutdown.await;
                stop.send_replace(true);
            },
        )
        .await;
        if let Some(admin) = admin {
            let _ = admin.await;
        }
    }
}

/// `; replicas: 10.0.0.2:5432 (serving), 10.0.0.3:5432 (down: …)`, or nothing.
fn replicas_line(app: &App) -> String {
    let replicas = app.metrics.reads.replicas();
    if replicas.is_empty() {
        return String::new();
    }
    let each: Vec<String> = replicas
        .iter()
        .map(|replica| {
            let state = replica.state();
            match state.why {
                Some(why) => format!("{} ({}: {why})", replica.name, state.standing.name()),
                None => format!("{} ({})", replica.name, state.standing.name()),
            }
        })
        .collect();
    format!("; replicas: {}", each.join(", "))
}
