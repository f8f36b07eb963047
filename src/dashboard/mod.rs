//! The operator's address (`--admin-bind`): a live dashboard at `/dashboard`, the data
//! it draws at `/dashboard/data`, and `/metrics`. The page is one HTML file with its
//! CSS and JavaScript, embedded in the binary: nothing is fetched from elsewhere.

pub mod history;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::http::error::{ApiError, bad_request, not_found};
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

/// The routes of the admin address; starts the sampling the page draws.
pub fn router(app: Arc<App>, serving: SocketAddr) -> Router {
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
