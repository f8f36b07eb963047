//! The operator's address (`--admin-bind`): a live dashboard at `/dashboard`, the data
//! it draws at `/dashboard/data`, and `/metrics`. The page is one HTML file with its
//! CSS and JavaScript, embedded in the binary: nothing is fetched from elsewhere.
//!
//! It answers only requests addressed to it by a loopback name (`localhost`,
//! `*.localhost`), an IP address, or a name of `--admin-allowed-hosts`: a web page
//! whose name an attacker re-points at 127.0.0.1 (DNS rebinding) is refused, because
//! the browser still sends the attacker's name as Host.

pub mod history;

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{Query, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tower::{Layer as _, Service};

use crate::config::AllowedHost;
use crate::http::error::{ApiError, bad_request, misdirected_request, not_found};
use crate::metrics::events::{Invalidation, KEPT_FOR, unix_ms};
use crate::metrics::{CacheKind, Counts, HitsMisses};
use crate::service::App;
use crate::service::CacheBackendStatus;
use history::{History, Sample};

const PAGE: &str = include_str!("page.html");

#[derive(Clone)]
struct DashboardState {
    app: Arc<App>,
    history: Arc<History>,
    /// The main address, shown on the page.
    serving: SocketAddr,
    started_ms: u64,
}

/// The routes of the admin address behind its Host check; starts the sampling the page
/// draws.
pub fn router(
    app: Arc<App>,
    serving: SocketAddr,
) -> impl Service<Request, Response = Response, Error = Infallible, Future: Send + 'static>
+ Clone
+ Send
+ 'static {
    let allowed: Arc<[AllowedHost]> = app.settings.admin_allowed_hosts.clone().into();
    // Around the whole router, so that the check comes before routing: a refused
    // request learns nothing, not even which methods a path allows.
    axum::middleware::from_fn_with_state(allowed, admit_host).layer(routes(app, serving))
}

/// Refuses requests addressed to a name the operator did not choose, with 421: the
/// request is well-formed but was sent to a server that does not answer for that
/// name (RFC 9110 §15.5.20), which is what a rebound name is; 403 would suggest that
/// some credential could help.
async fn admit_host(
    State(allowed): State<Arc<[AllowedHost]>>,
    request: Request,
    next: Next,
) -> Response {
    // An absolute-form target's authority overrides Host (RFC 9112 §3.2.2).
    let named = match request.uri().authority() {
        Some(authority) => Some(authority.as_str()),
        None => request
            .headers()
            .get(header::HOST)
            .and_then(|host| host.to_str().ok()),
    };
    match named {
        Some(host) if admitted(host, &allowed) => next.run(request).await,
        Some(host) => misdirected_request(format!(
            "the admin address does not answer for the host `{}`: use localhost or an IP address, or add the name to --admin-allowed-hosts",
            host.escape_debug()
        ))
        .into_response(),
        None => misdirected_request(
            "the admin address answers only requests that name their host (Host)",
        )
        .into_response(),
    }
}

/// Whether `host` (`name[:port]`, `[v6][:port]`) is a loopback name, an IP address or
/// an allowed name. Names compare without case and without a trailing dot.
fn admitted(host: &str, allowed: &[AllowedHost]) -> bool {
    if host.starts_with('[') {
        // An IPv6 literal (its syntax was checked with the request head).
        return true;
    }
    let name = host.split(':').next().unwrap_or_default();
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name.parse::<Ipv4Addr>().is_ok()
        || allowed.iter().any(|allowed| allowed.as_str() == name)
}

fn routes(app: Arc<App>, serving: SocketAddr) -> Router {
    let history = Arc::new(History::default());
    tokio::spawn(history::keep(app.clone(), history.clone()));
    let state = DashboardState {
        app,
        history,
        serving,
        started_ms: unix_ms(SystemTime::now()),
    };
    Router::new()
        .route("/", get(|| async { Redirect::temporary("/dashboard") }))
        .route("/dashboard", get(page))
        .route("/dashboard/data", get(data))
        .route("/metrics", get(metrics))
        .fallback(|| async { not_found() })
        .with_state(state)
}

async fn page() -> Response {
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:",
            ),
        ],
        Html(PAGE),
    )
        .into_response()
}

async fn metrics(State(state): State<DashboardState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.app.metrics.render_prometheus(),
    )
}

/// Everything the page draws. `totals` are this process's counters, the very numbers of
/// `/metrics`; `samples` are those after `since`, `events` those after `events_after`.
#[derive(Serialize)]
struct Data {
    now: u64,
    server: Server,
    cache: CacheBackendStatus,
    totals: Totals,
    /// Every server's counters summed (Redis mode).
    all_totals: Option<Totals>,
    window_ms: u64,
    samples: Vec<Sample>,
    events: Vec<Invalidation>,
}

#[derive(Serialize)]
struct Server {
    address: String,
    version: &'static str,
    started: u64,
    database: String,
    /// How the connections to it travel; null when it does not answer.
    database_transport: Option<String>,
    /// Reads of cache misses by where they went (this process).
    reads: crate::metrics::replicas::ReadCounts,
    /// The reasons' names, in the order of `reads.fallbacks`.
    fallback_reasons: [&'static str; crate::metrics::replicas::Fallback::ALL.len()],
    replicas: Vec<Replica>,
}

#[derive(Serialize)]
struct Replica {
    name: String,
    reads: u64,
    #[serde(flatten)]
    state: crate::metrics::replicas::ReplicaState,
}

#[derive(Serialize)]
struct Totals {
    requests: u64,
    db_queries: u64,
    cache: Levels,
    /// This process only.
    cache_errors: Option<u64>,
    invalidations: Option<u64>,
}

#[derive(Serialize)]
struct Levels {
    view: HitsMisses,
    all_properties: HitsMisses,
    queries: HitsMisses,
    items: HitsMisses,
}

impl Totals {
    fn of(counts: &Counts, cache_errors: Option<u64>, invalidations: Option<u64>) -> Totals {
        Totals {
            requests: counts.requests,
            db_queries: counts.db_queries,
            cache: Levels {
                view: counts.kind(CacheKind::View),
                all_properties: counts.kind(CacheKind::AllProperties),
                queries: counts.kind(CacheKind::Queries),
                items: counts.kind(CacheKind::Items),
            },
            cache_errors,
            invalidations,
        }
    }
}

#[derive(serde::Deserialize)]
struct Since {
    since: Option<String>,
    events_after: Option<String>,
}

fn whole_number(field: &str, raw: Option<String>, rule: &str) -> Result<u64, ApiError> {
    raw.map_or(Ok(0), |raw| {
        raw.parse::<u64>()
            .map_err(|_| bad_request(format!("{field}: must be a whole number {rule}")))
    })
}

async fn data(
    State(state): State<DashboardState>,
    query: Result<Query<Since>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Data>, ApiError> {
    let Ok(Query(Since {
        since,
        events_after,
    })) = query
    else {
        return Err(bad_request("the query string cannot be read"));
    };
    let since = whole_number("since", since, "of milliseconds since the Unix epoch")?;
    let events_after = whole_number(
        "events_after",
        events_after,
        "(the `seq` of the last event seen)",
    )?;
    let app = &state.app;
    let metrics = &app.metrics;
    let shared = app.shared_counts().await;
    Ok(Json(Data {
        now: unix_ms(SystemTime::now()),
        server: Server {
            address: state.serving.to_string(),
            version: env!("CARGO_PKG_VERSION"),
            started: state.started_ms,
            database: app.settings.database_url.to_string(),
            database_transport: app.database_transport().await,
            reads: metrics.reads.counts(),
            fallback_reasons: crate::metrics::replicas::Fallback::ALL.map(|reason| reason.name()),
            replicas: metrics
                .reads
                .replicas()
                .iter()
                .map(|replica| Replica {
                    name: replica.name.clone(),
                    reads: replica.reads(),
                    state: replica.state(),
                })
                .collect(),
        },
        cache: app.cache_status(),
        totals: Totals::of(
            &metrics.counts(),
            Some(metrics.cache_errors()),
            Some(metrics.invalidations().total()),
        ),
        all_totals: shared.map(|counts| Totals::of(&counts, None, None)),
        window_ms: u64::try_from(KEPT_FOR.as_millis()).unwrap_or(u64::MAX),
        samples: state.history.since(since),
        events: metrics.invalidations().after(events_after),
    }))
}

/// The log line naming the dashboard, or how to turn it on.
pub fn announce(admin: Option<SocketAddr>) {
    match admin {
        Some(address) => tracing::info!("dashboard on http://{address}/dashboard"),
        None => tracing::info!(
            "dashboard off: set --admin-bind or LISTINGS_ADMIN_BIND (e.g. 127.0.0.1:9000) to turn it on"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_ip_addresses_and_allowed_names_are_admitted() {
        let allowed: Vec<AllowedHost> = ["ops.example.com"]
            .iter()
            .map(|name| name.parse().expect("a name"))
            .collect();
        for host in [
            "localhost",
            "LOCALHOST:9000",
            "localhost.",
            "dash.localhost:9000",
            "127.0.0.1",
            "10.1.2.3:9000",
            "[::1]:9000",
            "[fe80::1]",
            "ops.example.com",
            "Ops.Example.Com.:9000",
        ] {
            assert!(admitted(host, &allowed), "{host}");
        }
        for host in [
            "evil.example",
            "localhost.evil.example",
            "evillocalhost",
            "example.com",
            "www.ops.example.com",
            "127.0.0.1.evil.example",
            "",
        ] {
            assert!(!admitted(host, &allowed), "{host}");
        }
    }
}
