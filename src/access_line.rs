//! The access line and the request id, one definition for every answer: the ones the
//! router's services make (`http::access_log`) and the ones the server makes before any
//! route sees the request (`server`: a refused head, an unknown method). The id is the
//! client's own when it sent a usable one (a proxy's), else a new one.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::http::{HeaderValue, Method, Uri};
use axum::response::Response;

pub const REQUEST_ID: &str = "x-request-id";

/// The target of access lines, so `RUST_LOG=info,listings::access=off` can drop them.
pub const TARGET: &str = "listings::access";

/// A prefix random per process and a counter: unique across servers without
/// coordination, and cheap (16 hex digits, no allocation beyond the header's own).
pub(crate) fn new_request_id() -> HeaderValue {
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
pub(crate) fn usable(id: &HeaderValue) -> bool {
    let bytes = id.as_bytes();
    (1..=64).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// The id a response carries: the client's own when it is usable, else a new one.
pub fn request_id(client: Option<&HeaderValue>) -> HeaderValue {
    match client {
        Some(id) if usable(id) => id.clone(),
        _ => new_request_id(),
    }
}

pub fn enabled() -> bool {
    tracing::enabled!(target: TARGET, tracing::Level::INFO)
}

/// One access line; `-` for a method or path the request did not get as far as.
pub fn log_line(
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
/// access line the router's `AccessLog` gives the others. It is not counted in the request
/// metrics, which measure what the routes serve.
pub fn answered_early(request: Early<'_>, response: &mut Response) {
    let id = request_id(request.client_id);
    if enabled() {
        let latency = request.since.elapsed();
        log_line(request.method, request.uri, response, latency, &id);
    }
    response.headers_mut().insert(REQUEST_ID, id);
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
