//! The view level: whole GET responses (status, content type, strong ETag, body) cached
//! per normalized URL. A hit sends the stored bytes as they are, with no database work
//! and no serialization. Only 200 responses are stored. Every response says
//! `X-Cache: HIT` or `MISS` and `Cache-Control: no-cache`, and a matching
//! `If-None-Match` gets 304 with no body.

use axum::body::{Body, to_bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::app::AppState;
use crate::cache::CacheStatus;
use crate::cache::keys::{Resource, ViewKey};
use crate::cache::values::CachedResponse;
use crate::domain::PropertyQuery;
use crate::error::internal_error;
use crate::http::{PROPERTIES, PROPERTIES_NO_SLASH, PROPERTY};
use crate::services::views;

pub async fn cache_views(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    if method != Method::GET && method != Method::HEAD {
        return next.run(request).await;
    }
    let Some(key) = view_key(&request) else {
        // Not cacheable as asked (an invalid query, an id that is no number): the
        // handler explains.
        return next.run(request).await;
    };
    let if_none_match = request.headers().get(header::IF_NONE_MATCH).cloned();
    let rendered = if method == Method::HEAD {
        // HEAD is answered from the GET entry when there is one. Its own rendering
        // has no body to store, so it is never stored.
        match views::peek(&app, &key).await {
            Some(cached) => Ok((cached, CacheStatus::Hit)),
            None => Err(next.run(request).await),
        }
    } else {
        views::cached(&app, &key, || render(request, next)).await
    };
    let mut response = match rendered {
        Ok((cached, status)) => respond(cached, status, if_none_match.as_ref()),
        Err(uncacheable) => with_x_cache(uncacheable, "MISS"),
    };
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// The normalized URL: lists by their canonical query (unknown parameters and
/// parameter order do not count, and `/properties` is `/properties/`), items by their
/// parsed id (`/properties/007/` is `/properties/7/`).
fn view_key(request: &Request) -> Option<ViewKey> {
    let route = request.extensions().get::<MatchedPath>()?.as_str();
    let normalized = match route {
        PROPERTIES | PROPERTIES_NO_SLASH => {
            let query =
                PropertyQuery::from_query_string(request.uri().query().unwrap_or_default()).ok()?;
            query.url_of_page(query.page)
        }
        PROPERTY => {
            let id = request
                .uri()
                .path()
                .trim_matches('/')
                .strip_prefix("properties/")?;
            format!("/properties/{}/", id.parse::<i64>().ok()?)
        }
        _ => return None,
    };
    Some(ViewKey::new(
        Method::GET.as_str(),
        &normalized,
        Resource::Properties,
    ))
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
    Ok(CachedResponse::new(
        parts.status.as_u16(),
        content_type,
        body,
    ))
}

fn respond(
    cached: CachedResponse,
    status: CacheStatus,
    if_none_match: Option<&HeaderValue>,
) -> Response {
    let x_cache = match status {
        CacheStatus::Hit => "HIT",
        CacheStatus::Miss => "MISS",
    };
    let not_modified = if_none_match.is_some_and(|tags| matches_etag(tags, &cached.etag));
    let mut response = if not_modified {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response
    } else {
        let mut response = Response::new(Body::from(cached.body));
        *response.status_mut() = StatusCode::from_u16(cached.status).unwrap_or(StatusCode::OK);
        set_header(
            response.headers_mut(),
            header::CONTENT_TYPE,
            &cached.content_type,
        );
        response
    };
    set_header(response.headers_mut(), header::ETAG, &cached.etag);
    with_x_cache(response, x_cache)
}

/// `If-None-Match: "a", W/"b"` or `*`; weak tags compare by their opaque part.
fn matches_etag(header: &HeaderValue, etag: &str) -> bool {
    let Ok(tags) = header.to_str() else {
        return false;
    };
    tags.split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

fn set_header(headers: &mut HeaderMap, name: header::HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

fn with_x_cache(mut response: Response, value: &'static str) -> Response {
    response
        .headers_mut()
        .insert("x-cache", HeaderValue::from_static(value));
    response
}
