//! One access line per request (method, path, status, latency, cache status, request
//! id), and a request id on every response (`x-request-id`), both as `access_line`
//! defines them. Lines logged while the request is handled carry the id too, through
//! the `request` span.

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::Request;
use axum::response::{IntoResponse as _, Response};
use futures_util::FutureExt as _;
use tower::Service;
use tracing::Instrument as _;

use crate::access_line::{REQUEST_ID, enabled, log_line, request_id};
use crate::metrics::Metrics;

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
