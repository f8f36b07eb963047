//! One access line per request (method, path, status, latency, cache status, request
//! id), and a request id on every response (`x-request-id`): the client's own when it
//! sent a usable one (a proxy's), else a new one. Lines logged while the request is
//! handled carry the id too, through the `request` span.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument as _;

pub const REQUEST_ID: &str = "x-request-id";

/// The target of access lines, so `RUST_LOG=info,listings::access=off` can drop them.
pub const TARGET: &str = "listings::access";

/// A prefix random per process and a counter: unique across servers without
/// coordination, and cheap.
fn new_request_id() -> String {
    static PROCESS: LazyLock<u32> = LazyLock::new(rand::random);
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!(
        "{:08x}{:08x}",
        *PROCESS,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A client's id is kept when it is short and plain, so it cannot forge log lines.
fn usable(id: &HeaderValue) -> bool {
    let bytes = id.as_bytes();
    (1..=64).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

pub async fn log_requests(mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = match request.headers().get(REQUEST_ID) {
        Some(id) if usable(id) => id.clone(),
        _ => HeaderValue::from_str(&new_request_id())
            .unwrap_or_else(|_| HeaderValue::from_static("-")),
    };
    request.headers_mut().insert(REQUEST_ID, id.clone());
    let method = request.method().clone();
    let uri = request.uri().clone();
    let id_text = id.to_str().unwrap_or("-").to_owned();
    let span = tracing::info_span!("request", request_id = %id_text);
    let mut response = next.run(request).instrument(span).await;
    let cache = response
        .headers()
        .get("x-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    tracing::info!(
        target: TARGET,
        method = %method,
        path = uri.path(),
        query = uri.query().unwrap_or(""),
        status = response.status().as_u16(),
        latency_ms = started.elapsed().as_micros() as f64 / 1000.0,
        cache,
        request_id = %id_text,
        "request"
    );
    response.headers_mut().insert(REQUEST_ID, id);
    response
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
