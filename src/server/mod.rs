//! The HTTP/1.1 server: an accept loop of its own around hyper, because `axum::serve`
//! has no header read timeout, no idle timeout and no connection cap, and a flood of
//! slow clients could hold it for ever.
//!
//! - At most `max_connections` connections at once, below the file-descriptor limit
//!   (raised to its hard limit at start): past it, new clients wait in the kernel's
//!   backlog instead of making `accept` fail for everyone.
//! - Each connection has a deadline that depends on what it is doing (see [`watchdog`]):
//!   the request head must arrive within `header_read_timeout` of its first byte (of
//!   the connection, for the first request), and an idle keep-alive connection is
//!   closed after `idle_timeout`. Request bodies have their own timeout (408), applied
//!   where they are read.
//! - On shutdown, new connections are refused, idle ones closed, requests in flight
//!   finish; after `shutdown_timeout` whatever remains is closed.

mod watchdog;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{Service, ServiceExt as _};

use crate::config::human_duration;
use crate::logging::{Failure, log_limited};
use watchdog::{Activity, Watched};

/// Timeouts and limits of the HTTP server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    pub header_read_timeout: Duration,
    pub body_timeout: Duration,
    pub idle_timeout: Duration,
    pub shutdown_timeout: Duration,
    /// `None`: as many as the file-descriptor limit allows (see [`connection_cap`]).
    pub max_connections: Option<usize>,
}

/// Where `serve` listens, and where `cache-metrics` and `healthcheck` look for it.
pub const DEFAULT_BIND: std::net::SocketAddr = std::net::SocketAddr::V4(
    std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 8000),
);
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections the kernel completes and queues before the server accepts them: room for
/// a burst, and for clients waiting while the server is at its connection cap. The
/// kernel caps it at `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 4096;

/// File descriptors kept for everything but client connections: the database pool, the
/// change listener, Redis, the SQLite files, logs.
const RESERVED_FDS: u64 = 128;

/// The largest request head (and read buffer) of a connection, so that a thousand slow
/// clients cannot make the server hold a thousand large buffers.
const MAX_READ_BUFFER: usize = 64 * 1024;

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            max_connections: None,
        }
    }
}

/// Binds `address` with a backlog of [`LISTEN_BACKLOG`] (tokio's default is 1024 at
/// most, and the platform's often 128).
pub fn listen(address: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Raises the soft file-descriptor limit to the hard one and returns how many client
/// connections fit below it. A configured cap above that is lowered, with a warning.
pub fn connection_cap(configured: Option<usize>, reserved_for_database: usize) -> usize {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the file-descriptor limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft)
        }
    };
    let reserved = RESERVED_FDS + reserved_for_database as u64;
    let fits = usize::try_from(limit.saturating_sub(reserved))
        .unwrap_or(usize::MAX)
        .max(1);
    match configured {
        Some(wanted) if wanted > fits => {
            tracing::warn!(
                "--max-connections {wanted} does not fit the file-descriptor limit ({limit}); using {fits}"
            );
            fits
        }
        Some(wanted) => wanted,
        None => fits,
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then drains (see the module
/// documentation). Returns once every connection is closed.
pub async fn serve<S>(
    listener: TcpListener,
    router: S,
    limits: HttpLimits,
    max_connections: usize,
    shutdown: impl Future<Output = ()>,
) where
    S: Service<axum::extract::Request, Response = axum::response::Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let slots = Arc::new(Semaphore::new(max_connections));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot,
            () = &mut shutdown => break,
        };
        let Ok(slot) = slot else { break };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        match accepted {
            Ok((stream, _peer)) => {
                let watched = graceful.watcher();
                tokio::spawn(connection(stream, router.clone(), limits, slot, watched));
            }
            Err(e) => {
                // Out of file descriptors or memory, or a connection reset before it was
                // accepted: keep accepting, without spinning on a persistent error.
                log_limited!(warn, Failure::Accept, error = %e, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    drop(listener);
    let open = graceful.count();
    tracing::info!(
        "shutting down: finishing requests on {open} open connection(s), for at most {}",
        human_duration(limits.shutdown_timeout)
    );
    if tokio::time::timeout(limits.shutdown_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "connections still open after {}; closing them",
            human_duration(limits.shutdown_timeout)
        );
    }
}

/// One client connection, until it closes, its deadline passes, or shutdown ends it.
async fn connection<S>(
    stream: TcpStream,
    router: S,
    limits: HttpLimits,
    _slot: OwnedSemaphorePermit,
    graceful: hyper_util::server::graceful::Watcher,
) where
    S: Service<axum::extract::Request, Response = axum::response::Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    // Responses are written whole; waiting for more bytes to coalesce only adds latency.
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched::new(stream, activity.clone()));
    let service = hyper::service::service_fn({
        let activity = activity.clone();
        move |request: hyper::Request<Incoming>| {
            activity.request_started();
            let response = router.clone().oneshot(request.map(axum::body::Body::new));
            let activity = activity.clone();
            async move {
                let response = response.await;
                activity.request_finished();
                response
            }
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        // The watchdog times the request head; hyper's own timer would also cut idle
        // keep-alive connections at the header timeout.
        .header_read_timeout(None)
        .max_buf_size(MAX_READ_BUFFER)
        .serve_connection(io, service);
    tokio::select! {
        served = graceful.watch(conn) => {
            if let Err(e) = served {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        () = activity.expired(&limits) => {
            tracing::debug!("connection closed: its client was too slow or idle too long");
        }
    }
}
