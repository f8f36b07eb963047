//! The view level: whole GET responses (status, content type, body) cached by method,
//! path and query. A hit sends the stored bytes as they are, with no database work and
//! no serialization. Only 200 responses are stored; `X-Cache` says HIT or MISS.

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::app::AppState;
use crate::cache::CacheStatus;
use crate::cache::keys::{Resource, ViewKey};
use crate::cache::values::CachedResponse;
use crate::error::internal_error;
use crate::services::catch_up_with_other_writers;

pub async fn cache_views(State(app): State<AppState>, request: Request, next: Next) -> Response {
    if request.method() != Method::GET {
        return next.run(request).await;
    }
    catch_up_with_other_writers(&app).await;
    let path_and_query = request
        .uri()
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_owned();
    let key = ViewKey::new(Method::GET.as_str(), &path_and_query, Resource::Properties);
    let rendered = app
        .cache
        .get_or_load(&key, app.settings.view_ttl, || render(request, next))
        .await;
    match rendered {
        Ok((cached, status)) => respond(cached, status),
        Err(uncacheable) => with_x_cache(uncacheable, "MISS"),
    }
}

/// Runs the handler; a 200 becomes a cacheable value, anything else is passed through.
async fn render(request: Request, next: Next) -> Result<CachedResponse, Response> {
    let response = next.run(request).await;
    if response.status() != StatusCode::OK {
        return Err(response);
    }
    let (parts, body) = response.into_parts();
    let Ok(body) = to_bytes(body, usize::MAX).await else {
        tracing::error!("response body could not be read for the view cache");
        return Err(internal_error().into_response());
    };
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_owned();
    Ok(CachedResponse {
        status: parts.status.as_u16(),
        content_type,
        body,
    })
}

fn respond(cached: CachedResponse, status: CacheStatus) -> Response {
    let mut response = Response::new(Body::from(cached.body));
    *response.status_mut() = StatusCode::from_u16(cached.status).unwrap_or(StatusCode::OK);
    if let Ok(content_type) = HeaderValue::from_str(&cached.content_type) {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, content_type);
    }
    let x_cache = match status {
        CacheStatus::Hit => "HIT",
        CacheStatus::Miss => "MISS",
    };
    with_x_cache(response, x_cache)
}

fn with_x_cache(mut response: Response, value: &'static str) -> Response {
    response
        .headers_mut()
        .insert("x-cache", HeaderValue::from_static(value));
    response
}
