//! One access line per request (method, path, status, latency, cache status, request
//! id), and a request id on every response (`x-request-id`): the client's own when it
//! sent a usable one (a proxy's), else a new one. Lines logged while the request is
//! handled carry the id too, through the `request` span. Answers the server makes
//! before any route sees the request (a refused head, an unknown method) get theirs
//! from [`answered_early`].

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::{HeaderValue, Method, Uri};
use axum::response::{IntoResponse as _, Response};
use futures_util::FutureExt as _;
use tower::Service;
use tracing::Instrument as _;

use crate::metrics::Metrics;

pub const REQUEST_ID: &str = "x-request-id";

/// The target of access lines, so `RUST_LOG=info,listings::access=off` can drop them.
pub const TARGET: &str = "listings::access";

/// A prefix random per process and a counter: unique across servers without
/// coordination, and cheap (16 hex digits, no allocation beyond the header's own).
fn new_request_id() -> HeaderValue {
    static PROCESS: LazyLock<u32> = LazyLock::new(rand::random);
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let id = (u64::from(*PROCESS) << 32) | (NEXT.fetch_add(1, Ordering::Relaxed) & 0xffff_ffff);
    let mut text = [0u8; 16];
    for (i, digit) in text.iter_mut().enumerate() {
        *digit = b"0123456789abcdef"[((id >> (60 - 4 * i)) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&text).unwrap_or(HeaderValue::from_static("-"))
}

/// A client's id is kept when it is short and plain, so it cannot forge log lines.
fn usable(id: &HeaderValue) -> bool {
    let bytes = id.as_bytes();
    (1..=64).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// The id a response carries: the client's own when it is usable, else a new one.
fn request_id(client: Option<&HeaderValue>) -> HeaderValue {
    match client {
        Some(id) if usable(id) => id.clone(),
        _ => new_request_id(),
    }
}

fn enabled() -> bool {
    tracing::enabled!(target: TARGET, tracing::Level::INFO)
}

/// One access line; `-` for a method or path the request did not get as far as.
fn log_line(
    method: Option<&Method>,
    uri: Option<&Uri>,
    response: &Response,
    latency: Duration,
    id: &HeaderValue,
) {
    let cache = response
        .headers()
        .get("x-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    tracing::info!(
        target: TARGET,
        method = %method.map_or("-", Method::as_str),
        path = uri.map_or("-", Uri::path),
        query = uri.and_then(Uri::query).unwrap_or(""),
        status = response.status().as_u16(),
        latency_ms = latency.as_micros() as f64 / 1000.0,
        cache,
        request_id = id.to_str().unwrap_or("-"),
        "request"
    );
}

/// A request the server answered before any service saw it, as far as it was read.
pub struct Early<'a> {
    pub method: Option<&'a Method>,
    pub uri: Option<&'a Uri>,
    /// The client's `x-request-id`, as sent.
    pub client_id: Option<&'a HeaderValue>,
    /// Where its latency starts: for a refused head, its first bytes.
    pub since: Instant,
}

/// Gives an answer the server made before any service saw its request the id and the
/// access line [`AccessLog`] gives the others. It is not counted in the request
/// metrics, which measure what the routes serve.
pub fn answered_early(request: Early<'_>, response: &mut Response) {
    let id = request_id(request.client_id);
    if enabled() {
        let latency = request.since.elapsed();
        log_line(request.method, request.uri, response, latency, &id);
    }
    response.headers_mut().insert(REQUEST_ID, id);
}

/// The outermost service: gives every request its id, logs its access line, and
/// counts it with its latency.
#[derive(Clone, Debug)]
pub struct AccessLog<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S> AccessLog<S> {
    pub fn new(inner: S, metrics: Arc<Metrics>) -> AccessLog<S> {
        AccessLog { inner, metrics }
    }
}

type BoxedResponse = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl<S> Service<Request> for AccessLog<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxedResponse;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> BoxedResponse {
        let started = Instant::now();
        let id = request_id(request.headers().get(REQUEST_ID));
        // Only what the access line needs, and only when it will be written.
        let logged = enabled().then(|| (request.method().clone(), request.uri().clone()));
        let span = tracing::info_span!("request", request_id = id.to_str().unwrap_or("-"));
        // A panic while the request is handled (logged with its id by the panic hook,
        // inside the span) is answered 500 here, once, instead of killing the
        // connection's task and leaving the client without an answer.
        let response = AssertUnwindSafe(self.inner.call(request).instrument(span)).catch_unwind();
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let mut response = match response.await {
                Ok(Ok(response)) => response,
                Err(_panicked) => crate::http::error::internal_error().into_response(),
            };
            let latency = started.elapsed();
            metrics.record_request(latency);
            if let Some((method, uri)) = logged {
                log_line(Some(&method), Some(&uri), &response, latency, &id);
            }
            response.headers_mut().insert(REQUEST_ID, id);
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_are_kept_only_when_plain() {
        assert!(usable(&HeaderValue::from_static("abc-123_x.y:z")));
        assert!(!usable(&HeaderValue::from_static("has space")));
        assert!(!usable(&HeaderValue::from_static("")));
        assert!(!usable(&HeaderValue::from_str(&"x".repeat(65)).unwrap()));
        assert_ne!(new_request_id(), new_request_id());
    }
}
