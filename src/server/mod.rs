//! The HTTP/1.1 server: an accept loop of its own around hyper, because `axum::serve`
//! has no header read timeout, no idle timeout and no connection cap, and a flood of
//! slow clients could hold it for ever.
//!
//! - At most `max_connections` connections at once, below the file-descriptor limit
//!   (raised to its hard limit at start): past it, new clients wait in the kernel's
//!   backlog instead of making `accept` fail for everyone (the first of them accepted,
//!   waiting for a slot).
//! - At the cap, the next client displaces the connection that has waited longest for
//!   its first request head, once that wait has lasted [`DISPLACE_AFTER`] (500 ms): that
//!   connection is closed, logged (at most once per 5 s) and counted in `/metrics`
//!   (`listings_http_connections_displaced_total`), and the new client takes its slot.
//!   A client that means to send a request sends its head at once, so a burst of new
//!   clients does not displace itself. Never displaced: a connection with a request in
//!   flight, an idle keep-alive one, or one awaiting a later head, which may follow a
//!   response still being written (see [`watchdog`]). With none to displace, the client
//!   waits for a slot to free.
//! - Each connection has a deadline that depends on what it is doing (see [`watchdog`]):
//!   the request head must arrive within `header_read_timeout` of its first byte (of
//!   the connection, for the first request), and an idle keep-alive connection is
//!   closed after `idle_timeout`; then the client gets 408 if some of a head came, and
//!   nothing otherwise. Request bodies have their own timeout (408), applied where they
//!   are read.
//! - On shutdown, new connections are refused, idle ones closed, requests in flight
//!   finish; after `shutdown_timeout` whatever remains is closed.
//! - HTTP as RFC 9110 and 9112 spell it, with the API's JSON errors: every request head
//!   is checked before hyper parses it (see [`gate`] and [`head`]: size, syntax, Host,
//!   Transfer-Encoding and Content-Length; `HTTP/1.x` with x > 1 is served as 1.1),
//!   and methods no route could know are 501 here (known ones a route lacks stay 405,
//!   with `Allow`, from the router). These answers get the access line and request id
//!   the router's own answers get, on a listener whose router logs them.

mod file_send;
mod gate;
mod head;
mod watchdog;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::IntoResponse as _;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tower::{Service, ServiceExt as _};

use crate::access_line::{self, Early, REQUEST_ID};
use crate::config::{HttpLimits, human_duration};
use crate::logging::{Failure, log_limited};
use crate::metrics::Metrics;
use watchdog::{Activity, Moment, Watched};

/// Connections the kernel completes and queues before the server accepts them: room for
/// a burst, and for clients waiting while the server is at its connection cap. The
/// kernel caps it at `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 4096;

/// File descriptors kept for everything but client connections: the database pool, the
/// change listener, Redis, the SQLite files, logs, and the memory files of long cached
/// bodies.
const RESERVED_FDS: u64 = 128 + crate::view::file_copy::MOST_FILES as u64;

/// How long a connection must have waited for its first request head before a client
/// at the cap may displace it: far longer than a head takes from a client that sends
/// one, so that new clients arriving together do not displace each other, and short
/// enough that a client finding the cap filled by new stalled connections is still
/// served within a second.
const DISPLACE_AFTER: Duration = Duration::from_millis(500);

/// How soon the accept loop looks again after asking a connection to make room, in case
/// the connection had its head by the time it looked, and stayed.
const DISPLACE_RETRY: Duration = Duration::from_millis(50);

/// The largest request head (and read buffer) of a connection, so that a thousand slow
/// clients cannot make the server hold a thousand large buffers.
const MAX_READ_BUFFER: usize = 64 * 1024;

/// How long a connection that timed out has to write its 408 (at once, unless the
/// client stopped reading) and drain the rest (`gate`'s linger, 1 s).
const TIMED_OUT_ANSWER_FOR: Duration = Duration::from_secs(2);

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
    served: Served,
    max_connections: usize,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) where
    S: Service<axum::extract::Request, Response = axum::response::Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let slots = Arc::new(Semaphore::new(max_connections));
    let mut connections = Connections::default();
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors or memory, or a connection reset before it was
                // accepted: keep accepting, without spinning on a persistent error.
                log_limited!(warn, Failure::Accept, error = %e, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => Ok(slot),
            Err(TryAcquireError::Closed) => break,
            Err(TryAcquireError::NoPermits) => tokio::select! {
                slot = make_room(&slots, &mut connections) => slot,
                () = &mut shutdown => break,
            },
        };
        let Ok(slot) = slot else { break };
        let activity = Arc::new(Activity::new());
        connections.add(&activity, max_connections - slots.available_permits());
        let client = Client {
            stream,
            peer,
            slot,
            activity,
        };
        let watched = graceful.watcher();
        tokio::spawn(connection(
            client,
            router.clone(),
            served,
            watched,
            metrics.clone(),
        ));
    }
    drop(listener);
    let limits = served.limits;
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

/// Waits for a free slot while the server is at its cap, displacing the connection that
/// has waited longest for its first request head once that wait reaches
/// [`DISPLACE_AFTER`].
async fn make_room(
    slots: &Arc<Semaphore>,
    connections: &mut Connections,
) -> Result<OwnedSemaphorePermit, AcquireError> {
    loop {
        // No connection starts while this waits, so those awaiting a first head only
        // become fewer: once there are none, only a slot freeing can help.
        let look_again = match connections.longest_waiting_head() {
            Some((stalled, since)) => match DISPLACE_AFTER.checked_sub(since.elapsed()) {
                Some(left) if !left.is_zero() => Some(left),
                _ => {
                    stalled.displace();
                    Some(DISPLACE_RETRY)
                }
            },
            None => None,
        };
        let look_again = async {
            match look_again {
                Some(wait) => tokio::time::sleep(wait).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            slot = slots.clone().acquire_owned() => return slot,
            () = look_again => {}
        }
    }
}

/// The connections of one listener as the accept loop alone keeps them: it adds each one
/// it starts and looks through them only at the cap, so the request path shares nothing
/// with it (no lock, no registration per request).
#[derive(Default)]
struct Connections {
    /// In the order they started; closed ones linger until the next look.
    all: Vec<Weak<Activity>>,
}

impl Connections {
    /// Adds a connection that starts now, `open` counting those open (it included).
    fn add(&mut self, activity: &Arc<Activity>, open: usize) {
        // Forgetting closed connections once the list is twice the open count (or 64)
        // keeps it within that, at O(1) a connection.
        if self.all.len() >= 2 * open.max(32) {
            self.all.retain(|entry| entry.strong_count() > 0);
        }
        self.all.push(Arc::downgrade(activity));
    }

    /// The open connection that has waited longest for its first request head (the
    /// first started of those that began waiting at the same moment), and since when;
    /// forgets closed connections on the way.
    fn longest_waiting_head(&mut self) -> Option<(Arc<Activity>, Moment)> {
        let mut longest: Option<(Arc<Activity>, Moment)> = None;
        self.all.retain(|entry| {
            let Some(activity) = entry.upgrade() else {
                return false;
            };
            if let Some(since) = activity.first_head_since()
                && longest
                    .as_ref()
                    .is_none_or(|(_, earliest)| since < *earliest)
            {
                longest = Some((activity, since));
            }
            true
        });
        longest
    }
}

/// A client connection with its slot.
struct Client {
    stream: TcpStream,
    peer: SocketAddr,
    slot: OwnedSemaphorePermit,
    activity: Arc<Activity>,
}

/// What every connection of a listener is held to.
#[derive(Clone, Copy)]
pub struct Served {
    pub limits: HttpLimits,
    /// The largest request body any route reads: a longer Content-Length is 413 at once.
    pub max_body: u64,
    /// Whether the router writes access lines and request ids (its `AccessLog`), which
    /// the answers made here before routing then get too.
    pub access_log: bool,
}

/// Methods of RFC 9110, PATCH, and QUERY (the safe method with a body the HTTP working
/// group is standardising, which clients and fuzzers already send): a route that lacks
/// one answers 405 with `Allow`. Any other is one this server cannot implement
/// anywhere, so 501 (RFC 9110 §9.1).
fn is_known_method(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET
            | Method::HEAD
            | Method::POST
            | Method::PUT
            | Method::DELETE
            | Method::CONNECT
            | Method::OPTIONS
            | Method::TRACE
            | Method::PATCH
    ) || method.as_str() == "QUERY"
}

/// An error answered by the server itself, in the API's shape (`http::error`'s
/// `ErrorBody`, which this layer cannot name): `{"error": "..."}`.
fn json_error(status: StatusCode, message: &str) -> axum::response::Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

/// The answer made here before routing, if any, with what its access line says of the
/// request: a refused head's, or 501 for a method no route could know.
fn early_answer<'a>(
    refused: Option<&'a gate::Refused>,
    request: &'a hyper::Request<Incoming>,
) -> Option<(axum::response::Response, Early<'a>)> {
    if let Some(refused) = refused {
        let seen = &refused.seen;
        let early = Early {
            method: seen.method.as_ref(),
            uri: seen.target.as_ref(),
            client_id: seen.request_id.as_ref(),
            since: refused.since,
        };
        let answer = json_error(refused.refusal.status, &refused.refusal.message);
        return Some((answer, early));
    }
    if is_known_method(request.method()) {
        return None;
    }
    let answer = json_error(
        StatusCode::NOT_IMPLEMENTED,
        &format!("the method `{}` is not implemented", request.method()),
    );
    let early = Early {
        method: Some(request.method()),
        uri: Some(request.uri()),
        client_id: request.headers().get(REQUEST_ID),
        since: std::time::Instant::now(),
    };
    Some((answer, early))
}

/// When the connection has waited `waited` for too long: has the gate answer a head
/// that has begun with 408, or end the stream when none has (an idle connection), and
/// gives hyper a moment to write that and close. A hyper still writing to a client that
/// stopped reading is not waited for longer.
async fn time_out(
    signals: &gate::Signals,
    waited: Duration,
    conn: std::pin::Pin<&mut impl Future>,
) {
    signals.timed_out(waited);
    if tokio::time::timeout(TIMED_OUT_ANSWER_FOR, conn)
        .await
        .is_err()
    {
        tracing::debug!("a timed-out connection was cut while writing: its client does not read");
    }
}

/// One client connection, until it closes, its deadline passes, it is displaced, or
/// shutdown ends it.
async fn connection<S>(
    client: Client,
    router: S,
    Served {
        limits,
        max_body,
        access_log,
    }: Served,
    graceful: hyper_util::server::graceful::Watcher,
    metrics: Arc<Metrics>,
) where
    S: Service<axum::extract::Request, Response = axum::response::Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let Client {
        stream,
        peer,
        slot,
        activity,
    } = client;
    // Responses are written whole; waiting for more bytes to coalesce only adds latency.
    let _ = stream.set_nodelay(true);
    let signals = Arc::new(gate::Signals::default());
    let io = TokioIo::new(gate::Gate::new(
        Watched::new(file_send::FileSending::new(stream), activity.clone()),
        max_body,
        signals.clone(),
    ));
    let service = hyper::service::service_fn({
        let activity = activity.clone();
        let signals = signals.clone();
        move |request: hyper::Request<Incoming>| {
            activity.request_started();
            // Decided here, as hyper hands the request over: a refusal is set before
            // its stand-in request is released, and after every earlier request.
            let refused = signals.refused();
            let answer = early_answer(refused, &request).map(|(mut answer, early)| {
                if access_log {
                    access_line::answered_early(early, &mut answer);
                }
                answer
            });
            // The gate passes a chunked body unread, so it cannot find the head after
            // it: that connection serves no other request, nor does a refused one.
            let close =
                refused.is_some() || request.headers().contains_key(header::TRANSFER_ENCODING);
            let routed = router.clone().oneshot(request.map(axum::body::Body::new));
            let activity = activity.clone();
            async move {
                let mut response = match answer {
                    Some(answer) => answer,
                    None => match routed.await {
                        Ok(response) => response,
                        Err(never) => match never {},
                    },
                };
                if close {
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                activity.request_finished();
                Ok::<_, Infallible>(response)
            }
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        // The watchdog times the request head; hyper's own timer would also cut idle
        // keep-alive connections at the header timeout.
        .header_read_timeout(None)
        // Heads are checked against smaller limits first (see `head`); hyper's own
        // (100 header lines by default, as `head::MAX_HEADERS`) never trip.
        .max_buf_size(MAX_READ_BUFFER)
        .serve_connection(io, service);
    let mut conn = std::pin::pin!(graceful.watch(conn));
    tokio::select! {
        // The connection first: a head that has arrived is read before a displacement
        // is considered, so a client that did send its head is not displaced.
        biased;
        served = conn.as_mut() => {
            if let Err(e) = served {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        waited = activity.expired(&limits) => {
            time_out(&signals, waited, conn).await;
            tracing::debug!("connection closed: its client was too slow or idle too long");
        }
        waited = activity.displaced() => {
            metrics.record_connection_displaced();
            log_limited!(
                warn,
                Failure::Displaced,
                %peer,
                waited = ?waited,
                "at the connection cap: closed the connection that had waited longest for its first request head, to make room for a new client"
            );
        }
    }
    // A new client may take the slot only once the socket is closed (with the select's
    // futures), so that open sockets stay within the cap, and once the accept loop can
    // no longer pick this connection to make room.
    drop(activity);
    drop(slot);
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_connection_waiting_longest_for_its_first_head_is_picked() {
        let mut connections = Connections::default();
        let busy = Arc::new(Activity::new());
        busy.request_started();
        connections.add(&busy, 1);
        tokio::time::advance(Duration::from_secs(1)).await;
        let oldest = Arc::new(Activity::new());
        connections.add(&oldest, 2);
        // Started at the same moment: the first started goes first.
        let twin = Arc::new(Activity::new());
        connections.add(&twin, 3);
        tokio::time::advance(Duration::from_secs(1)).await;
        let younger = Arc::new(Activity::new());
        connections.add(&younger, 4);
        let idle = Arc::new(Activity::new());
        idle.request_started();
        idle.request_finished();
        connections.add(&idle, 5);
        tokio::time::advance(Duration::from_millis(500)).await;

        let (picked, since) = connections.longest_waiting_head().expect("three waiting");
        assert!(Arc::ptr_eq(&picked, &oldest));
        assert_eq!(since.elapsed(), Duration::from_millis(1500));

        drop((picked, oldest));
        let (picked, _) = connections.longest_waiting_head().expect("two waiting");
        assert!(Arc::ptr_eq(&picked, &twin));
        assert_eq!(connections.all.len(), 4, "the closed one is forgotten");

        twin.request_started();
        let (picked, since) = connections.longest_waiting_head().expect("one waiting");
        assert!(Arc::ptr_eq(&picked, &younger));
        assert_eq!(since.elapsed(), Duration::from_millis(500));

        younger.request_started();
        assert!(connections.longest_waiting_head().is_none());
    }

    #[test]
    fn closed_connections_do_not_pile_up() {
        let mut connections = Connections::default();
        let open = Arc::new(Activity::new());
        connections.add(&open, 1);
        for _ in 0..1000 {
            connections.add(&Arc::new(Activity::new()), 2);
        }
        assert!(connections.all.len() <= 64, "{}", connections.all.len());
        assert!(connections.all[0].strong_count() > 0, "the open one stays");
    }

    /// Real time and sockets, on one thread (the test clock is per thread).
    #[tokio::test]
    async fn at_the_cap_a_new_client_displaces_the_one_stalled_longest_on_its_head() {
        let listener = listen("127.0.0.1:0".parse().expect("address")).expect("listen");
        let address = listener.local_addr().expect("address");
        let metrics = Arc::new(Metrics::default());
        let router = tower::service_fn(|_: axum::extract::Request| async {
            Ok::<_, Infallible>(axum::response::Response::new(axum::body::Body::from("ok")))
        });
        let served = Served {
            limits: HttpLimits::default(),
            max_body: 64 * 1024,
            access_log: false,
        };
        let server = tokio::spawn(serve(
            listener,
            router,
            served,
            2,
            metrics.clone(),
            std::future::pending(),
        ));
        let stalled = async || {
            let mut stream = TcpStream::connect(address).await.expect("connect");
            stream.write_all(b"GET / HTTP/1.1\r\n").await.expect("send");
            stream
        };
        let start = tokio::time::Instant::now();
        let mut oldest = stalled().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut younger = stalled().await;

        let mut client = TcpStream::connect(address).await.expect("connect");
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
            .await
            .expect("send");
        let mut response = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut response))
            .await
            .expect("answered in time")
            .expect("read");
        let took = start.elapsed();
        assert!(
            response.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&response)
        );
        // Not before the oldest had waited DISPLACE_AFTER (from its accept, after `start`).
        assert!(
            took >= DISPLACE_AFTER - Duration::from_millis(5),
            "{took:?}"
        );
        assert!(took < Duration::from_secs(3), "{took:?}");
        assert_eq!(metrics.connections_displaced(), 1);

        let mut buf = [0; 16];
        let closed = tokio::time::timeout(Duration::from_secs(1), oldest.read(&mut buf)).await;
        assert!(
            matches!(closed, Ok(Ok(0) | Err(_))),
            "the oldest was closed: {closed:?}"
        );
        let open = tokio::time::timeout(Duration::from_millis(200), younger.read(&mut buf)).await;
        assert!(open.is_err(), "the younger one is still open: {open:?}");
        server.abort();
    }
}
