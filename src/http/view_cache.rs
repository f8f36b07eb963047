//! The view level, as a service in front of the router: whole GET responses cached per
//! normalized URL, answered from the near-cache when possible (no routing, no decoding,
//! no database), with the best encoding the client accepts and the page has (brotli,
//! gzip or none, each made once, when a client first takes it: see `service::views`).
//! Only 200 responses are stored. Every response says `X-Cache: HIT` or `MISS`,
//! `Cache-Control: no-cache` and `Vary: Accept-Encoding`, and a matching
//! `If-None-Match` gets 304 with no body.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};

use axum::body::{Body, to_bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tower::{Service, ServiceExt as _};

use crate::domain::PropertyQuery;
use crate::http::error::internal_error;
use crate::http::view_keys::{self, ParsedQuery};
use crate::service::CacheStatus;
use crate::service::views;
use crate::service::{AppState, Dependencies};
use crate::view::ReadyView;
use crate::view::precondition::TagList;
use crate::view::{CachedResponse, Encoding};

const NO_CACHE: HeaderValue = HeaderValue::from_static("no-cache");
const VARY: HeaderValue = HeaderValue::from_static("accept-encoding");
const HIT: HeaderValue = HeaderValue::from_static("HIT");
const MISS: HeaderValue = HeaderValue::from_static("MISS");
/// The key of the default listing, the most requested page.
static DEFAULT_LISTING: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from("/properties/"));

#[derive(Clone)]
pub struct ViewCache<S> {
    app: AppState,
    inner: S,
}

impl<S> ViewCache<S> {
    pub fn new(app: AppState, inner: S) -> ViewCache<S> {
        ViewCache { app, inner }
    }
}

/// The routes' own Debug output lists the paths they serve (the OpenAPI test reads it).
impl<S: std::fmt::Debug> std::fmt::Debug for ViewCache<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewCache")
            .field("inner", &self.inner)
            .finish()
    }
}

type BoxedResponse = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl<S> Service<Request> for ViewCache<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxedResponse;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> BoxedResponse {
        let cacheable = matches!(*request.method(), Method::GET | Method::HEAD);
        let Some((key, parsed)) = cacheable.then(|| view_key(&request)).flatten() else {
            // Writes, and reads the handler must explain (an invalid query, an id that
            // is no number).
            return Box::pin(self.inner.call(request));
        };
        let app = self.app.clone();
        let inner = self.inner.clone();
        Box::pin(async move { Ok(serve_view(app, inner, (key, parsed), request).await) })
    }
}

/// The response for the view `key` (with its query as parsed, for the handler of a
/// miss).
async fn serve_view<S>(
    app: AppState,
    inner: S,
    (key, parsed): (Arc<str>, Option<ParsedQuery>),
    request: Request,
) -> Response
where
    S: Service<Request, Response = Response, Error = Infallible> + Send + 'static,
    S::Future: Send,
{
    let encodings = accepted_encodings(request.headers());
    let if_none_match = if_none_match(request.headers());
    let head = request.method() == Method::HEAD;
    let mut request = request;
    if head {
        // HEAD is the GET's response without its body (RFC 9110 §9.3.2): rendered and
        // cached as the GET, so that a miss carries the same ETag and Vary as a hit.
        *request.method_mut() = Method::GET;
    }
    // Brotli, slower to make, follows a hit; until then gzip.
    let gzip = encodings[Encoding::Gzip as usize];
    let render = || {
        // Only a miss pays for the extensions' map.
        if let Some(parsed) = parsed {
            request.extensions_mut().insert(parsed);
        }
        render(inner, request, gzip)
    };
    let found = views::cached(&app, &key, encodings, render).await;
    let mut response = match found {
        Ok((ready, status)) => respond(&ready, status, encodings, if_none_match.as_ref(), head),
        Err(uncacheable) => with_x_cache(uncacheable, MISS),
    };
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, NO_CACHE);
    response
}

/// The normalized URL: lists by their canonical query (unknown parameters and
/// parameter order do not count, and `/properties` is `/properties/`), with the query
/// parsed; items by their parsed id (`/properties/007/` is `/properties/7/`). `None`
/// for anything else.
fn view_key(request: &Request) -> Option<(Arc<str>, Option<ParsedQuery>)> {
    let path = request.uri().path();
    if path == "/properties/" || path == "/properties" {
        return match request.uri().query() {
            None | Some("") => Some((Arc::clone(&DEFAULT_LISTING), None)),
            Some(query) => view_keys::normalized(query, |query| {
                let query = PropertyQuery::from_query_string(query).ok()?;
                Some((query.url_of_page(query.page), ParsedQuery(Arc::new(query))))
            })
            .map(|(key, parsed)| (key, Some(parsed))),
        };
    }
    // As the router decodes it (`/properties/%31/` is `/properties/1/`).
    let id = path.strip_prefix("/properties/")?.strip_suffix('/')?;
    let id = percent_encoding::percent_decode_str(id)
        .decode_utf8()
        .ok()?;
    let key = format!("/properties/{}/", id.parse::<i64>().ok()?);
    Some((Arc::from(key), None))
}

/// Runs the handler; a 200 that says what it depends on becomes a cacheable value (with
/// its gzip variant if `gzip`), anything else is passed through.
async fn render<S>(
    inner: S,
    request: Request,
    gzip: bool,
) -> Result<(CachedResponse, Dependencies), Response>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    let mut response = inner.oneshot(request).await.unwrap_or_else(|e| match e {});
    let dependencies = response.extensions_mut().remove::<Dependencies>();
    let (Some(dependencies), StatusCode::OK) = (dependencies, response.status()) else {
        return Err(response);
    };
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
    let status = parts.status.as_u16();
    let wanted: &'static [Encoding] = if gzip { &[Encoding::Gzip] } else { &[] };
    let length = body.len();
    let make = move || CachedResponse::rendered(status, content_type, body, wanted);
    // Hashing and compressing a large page takes a moment: not on the runtime's threads.
    let rendered = views::sized_work(length, make)
        .await
        .ok_or_else(|| internal_error().into_response())?;
    Ok((rendered, dependencies))
}

/// Every field line of `name` as one list (RFC 9110 §5.3); `None` when there is none.
/// A line that is not visible ASCII is left out.
fn combined(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    let lines: Vec<&str> = headers
        .get_all(name)
        .into_iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!lines.is_empty()).then(|| lines.join(", "))
}

/// Every `If-None-Match` line as one list of entity-tags, read as conditional writes
/// read it (commas inside quotes, `W/`, `*`). `None` when there is none, or when it is
/// malformed: a GET answered as if it had none is never wrong, a 304 could be.
fn if_none_match(headers: &HeaderMap) -> Option<TagList> {
    let lines = headers
        .get_all(header::IF_NONE_MATCH)
        .into_iter()
        .map(HeaderValue::as_bytes);
    TagList::parse(lines).ok().flatten()
}

/// The encodings the client accepts, best first: brotli, gzip, then none (RFC 9110
/// §12.5.3: every `Accept-Encoding` line, `q` in any case, `*` for codings not named;
/// a member whose weight is not a valid qvalue is ignored).
fn accepted_encodings(headers: &HeaderMap) -> [bool; 3] {
    let mut accepted = [true, false, false];
    let Some(value) = combined(headers, header::ACCEPT_ENCODING) else {
        return accepted;
    };
    let mut named = [false; 3];
    let mut any: Option<bool> = None;
    for member in value.split(',') {
        let mut parts = member.split(';');
        let name = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let mut weight = Some(1.0_f32);
        for parameter in parts {
            let Some((key, q)) = parameter.split_once('=') else {
                continue;
            };
            if key.trim().eq_ignore_ascii_case("q") {
                weight = qvalue(q.trim());
            }
        }
        let Some(weight) = weight else { continue };
        let index = match name.as_str() {
            "br" => Encoding::Brotli,
            "gzip" | "x-gzip" => Encoding::Gzip,
            "*" => {
                any = Some(weight > 0.0);
                continue;
            }
            _ => continue,
        } as usize;
        accepted[index] = weight > 0.0;
        named[index] = true;
    }
    if let Some(any) = any {
        for index in [Encoding::Brotli as usize, Encoding::Gzip as usize] {
            if !named[index] {
                accepted[index] = any;
            }
        }
    }
    accepted
}

/// `0`, `0.5`, `1.000`: at most three decimals, from 0 to 1 (RFC 9110 §12.4.2).
fn qvalue(text: &str) -> Option<f32> {
    let (whole, decimals) = text.split_once('.').unwrap_or((text, ""));
    let well_formed = matches!(whole, "0" | "1")
        && decimals.len() <= 3
        && decimals.bytes().all(|b| b.is_ascii_digit())
        && (whole == "0" || decimals.bytes().all(|b| b == b'0'));
    well_formed.then(|| text.parse().ok()).flatten()
}

fn respond(
    ready: &ReadyView,
    status: CacheStatus,
    accepted: [bool; 3],
    if_none_match: Option<&TagList>,
    head: bool,
) -> Response {
    let (encoding, (body, etag)) = ready.best(accepted);
    // The ETag of the variant chosen: a tag of another encoding names another
    // representation, which this 304 would wrongly confirm.
    let not_modified = if_none_match
        .zip(etag.to_str().ok())
        .is_some_and(|(tags, etag)| tags.matches_weakly(etag));
    let mut response = if not_modified {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response
    } else {
        let mut response = if head {
            let mut response = Response::new(Body::empty());
            response
                .headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
            response
        } else {
            Response::new(Body::from(body.clone()))
        };
        *response.status_mut() = ready.status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, ready.content_type.clone());
        if encoding != Encoding::Identity {
            headers.insert(
                header::CONTENT_ENCODING,
                HeaderValue::from_static(encoding.token()),
            );
        }
        response
    };
    let headers = response.headers_mut();
    headers.insert(header::ETAG, etag.clone());
    headers.insert(header::VARY, VARY);
    with_x_cache(
        response,
        match status {
            CacheStatus::Hit => HIT,
            CacheStatus::Miss => MISS,
        },
    )
}

fn with_x_cache(mut response: Response, value: HeaderValue) -> Response {
    response.headers_mut().insert("x-cache", value);
    response
}

/// For tests of the negotiation alone.
#[cfg(test)]
mod tests {
    use super::*;

    fn accepts(value: &str) -> [bool; 3] {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_str(value).unwrap(),
        );
        accepted_encodings(&headers)
    }

    #[test]
    fn field_lines_combine() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        headers.append(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
        assert_eq!(accepted_encodings(&headers), [true, true, false]);
        assert!(not_modified(&["\"0-b\"", "W/\"1-a\""], "\"1-a\""));
    }

    /// Whether `If-None-Match` lines `lines` match `etag`.
    fn not_modified(lines: &[&'static str], etag: &str) -> bool {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(header::IF_NONE_MATCH, HeaderValue::from_static(line));
        }
        if_none_match(&headers).is_some_and(|tags| tags.matches_weakly(etag))
    }

    #[test]
    fn if_none_match_is_a_list_of_entity_tags_compared_weakly() {
        let etag = "\"1-a\"";
        assert!(
            not_modified(&["\"x,y\", \"1-a\""], etag),
            "a comma inside quotes"
        );
        assert!(not_modified(&["W/\"x\" ,\t W/\"1-a\""], etag));
        assert!(not_modified(&["*"], etag));
        assert!(not_modified(&["", "\"1-a\""], etag), "an empty line");
        assert!(not_modified(&["\"1-a\""], "W/\"1-a\""));
        assert!(!not_modified(&["\"x,1-a\""], etag), "inside another tag");
        assert!(!not_modified(&["\"1-a-gzip\""], etag), "another variant");
        assert!(!not_modified(&[], etag));
        // Malformed, so ignored, even where a piece between commas looks like the tag.
        assert!(!not_modified(&["\"x,\"1-a\""], etag));
        assert!(
            !not_modified(&["\"x", "\"1-a\""], etag),
            "a malformed line spoils the list"
        );
        assert!(!not_modified(&["\"x\", *"], etag));
        assert!(!not_modified(&["1-a"], etag), "not quoted");
    }

    #[test]
    fn accept_encoding_is_read_with_its_weights() {
        assert_eq!(accepts("gzip, deflate, br"), [true, true, true]);
        assert_eq!(accepts("gzip;q=0.5"), [true, true, false]);
        assert_eq!(accepts("br;q=0, gzip"), [true, true, false]);
        assert_eq!(accepts("gzip;Q=0"), [true, false, false], "q in any case");
        assert_eq!(accepts("gzip ; q = 0"), [true, false, false]);
        assert_eq!(
            accepts("gzip;q=2"),
            [true, false, false],
            "an invalid weight: ignored"
        );
        assert_eq!(accepts("gzip;q=0.0001"), [true, false, false]);
        assert_eq!(accepts("*"), [true, true, true]);
        assert_eq!(accepts("*, br;q=0"), [true, true, false]);
        assert_eq!(accepts("identity"), [true, false, false]);
        assert_eq!(accepted_encodings(&HeaderMap::new()), [true, false, false]);
    }

    #[test]
    fn each_encoding_is_validated_by_its_own_etag() {
        let body = axum::body::Bytes::from("x".repeat(5000));
        let rendered = CachedResponse::new(200, "text/plain".into(), body);
        let ready = ReadyView::from_cached(&rendered.with_encodings(&[Encoding::Gzip]).unwrap());
        let gzip_etag = ready.variant(Encoding::Gzip).unwrap().1.clone();
        let identity_etag = ready.variant(Encoding::Identity).unwrap().1.clone();
        let tags = TagList::parse(std::iter::once(gzip_etag.as_bytes()))
            .unwrap()
            .unwrap();
        let gzip = respond(
            &ready,
            CacheStatus::Hit,
            [true, true, false],
            Some(&tags),
            false,
        );
        assert_eq!(gzip.status(), StatusCode::NOT_MODIFIED);
        let identity = respond(
            &ready,
            CacheStatus::Hit,
            [true, false, false],
            Some(&tags),
            false,
        );
        assert_eq!(
            identity.status(),
            StatusCode::OK,
            "the gzip tag names another representation"
        );
        assert_eq!(identity.headers()[header::ETAG], identity_etag);
        assert_eq!(identity.headers()[header::VARY], "accept-encoding");
        assert!(identity.headers().get(header::CONTENT_ENCODING).is_none());
    }
}
