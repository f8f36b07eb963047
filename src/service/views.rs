//! Whole HTTP responses through the caches, for the view layer (which may not reach the
//! caches itself): the near-cache first, then the view level of the cache, then the
//! handler. A rendering is stored at once, with a gzip variant if its own client takes
//! gzip. Variants are made when a client first takes them, so no page pays for an
//! encoding nobody asked for: a client answered from a rendering that lacks gzip gets
//! gzip made on the spot (tens of microseconds for a page), brotli (slower to make) is
//! made in the background, and the variants made are stored in place of the rendering
//! (once per server: each makes those its own clients take first); until then a brotli
//! client gets gzip, or the body as it is.

use std::future::Future;
use std::sync::Arc;

use crate::service::cache::clock::Stamp;
use crate::service::cache::keys::{Resource, ViewKey};
use crate::service::cache::{CacheStatus, Kept};
use crate::service::catch_up_with_other_writers;
use crate::service::{App, AppState, Dependencies};
use crate::view::ReadyView;
use crate::view::{CachedResponse, Encoding};

/// A body this long is compressed (and its ETag hashed) off the runtime's threads;
/// shorter ones take tens of microseconds, less than handing them to another thread.
const COMPRESS_INLINE_BELOW: usize = 16 * 1024;

/// Responses are cached per resource; every view so far shows properties.
const VIEWS_OF: Resource = Resource::Properties;

/// The ready response for the normalized URL `key` in this process, if it is current.
/// Other writers are caught up with first.
async fn near(app: &App, key: &str) -> Option<Arc<Kept>> {
    catch_up_with_other_writers(app).await;
    app.cache().near_get(key)
}

/// The response for `key`: ready in this process, from the cache, or `render`'s (with
/// what it depends on), stored unless a write came first and kept ready in this
/// process as well; with the variants a client that takes `accepted` (indexed by
/// [`Encoding`]) is answered in.
pub async fn cached<E, F, Fut>(
    app: &AppState,
    key: &str,
    accepted: [bool; 3],
    render: F,
) -> Result<(Arc<ReadyView>, CacheStatus), E>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<(CachedResponse, Dependencies), E>>,
{
    if let Some(kept) = near(app, key).await {
        return Ok((near_hit(app, key, &kept, accepted).await, CacheStatus::Hit));
    }
    let view_key = ViewKey::new(key, VIEWS_OF);
    // Its data comes through the data level, which picks where to read.
    let rendered = |_floor| async {
        let (response, Dependencies(tags)) = render().await?;
        Ok((response, tags))
    };
    let fetched = app
        .cache()
        .fetch(&view_key, app.settings.view_ttl, rendered)
        .await?;
    let mut value = fetched.value;
    // A rendering is made with gzip when its client takes it: only a hit can lack it.
    let gzip_made = if fetched.status == CacheStatus::Hit
        && gzip_now(
            value.lacks(Encoding::Gzip),
            value.variant(Encoding::Brotli).is_some(),
            accepted,
        )
        && let Some(complete) = with_encodings(value.clone(), &[Encoding::Gzip]).await
    {
        value = complete;
        true
    } else {
        false
    };
    let Some(stamp) = fetched.stamp else {
        return Ok((Arc::new(ReadyView::from_cached(&value)), fetched.status));
    };
    if gzip_made {
        complete_later(app.clone(), key, stamp.clone(), value.clone(), Vec::new());
    }
    let ready = Arc::new(ReadyView::to_keep(&value));
    app.cache().near_store(key, &stamp, ready.clone());
    Ok((ready, fetched.status))
}

/// `response` with the variants among `wanted` that it lacks (see [`sized_work`]);
/// `None` when it lacks none.
pub async fn with_encodings(
    response: CachedResponse,
    wanted: &'static [Encoding],
) -> Option<CachedResponse> {
    let body = response.body.len();
    sized_work(body, move || response.with_encodings(wanted))
        .await
        .flatten()
}

/// `work` on a body of `body` bytes (compressing it, hashing it): on this thread when
/// the body is short, on a blocking thread otherwise; `None` if that thread failed.
pub async fn sized_work<T: Send + 'static>(
    body: usize,
    work: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    if body < COMPRESS_INLINE_BELOW {
        return Some(work());
    }
    tokio::task::spawn_blocking(work).await.ok()
}

/// The compressed variants a client that takes `accepted` would be answered in, which
/// `view` lacks.
fn lacking(view: &ReadyView, accepted: [bool; 3]) -> Vec<Encoding> {
    [Encoding::Gzip, Encoding::Brotli]
        .into_iter()
        .filter(|&encoding| accepted[encoding as usize] && view.lacks(encoding))
        .collect()
}

/// Whether a client that takes `accepted` would be answered in identity from a
/// response only because it lacks gzip (`lacks_gzip`; `has_brotli`: it has brotli).
fn gzip_now(lacks_gzip: bool, has_brotli: bool, accepted: [bool; 3]) -> bool {
    let brotli = accepted[Encoding::Brotli as usize] && has_brotli;
    accepted[Encoding::Gzip as usize] && lacks_gzip && !brotli
}

/// The response `kept` in this process, for a client that takes `accepted`: if it lacks
/// gzip and the client would otherwise get the body uncompressed for that alone, with
/// gzip made now. The first client that lacks a variant keeps what it made in this
/// process at once (the next gzip clients compress no more), has the rest it takes made
/// off its path, and stores them all for every server.
async fn near_hit(app: &AppState, key: &str, kept: &Kept, accepted: [bool; 3]) -> Arc<ReadyView> {
    let view = &kept.view;
    let lacking = lacking(view, accepted);
    if lacking.is_empty() {
        return view.clone();
    }
    let has_brotli = view.variant(Encoding::Brotli).is_some();
    let answer = match gzip_now(view.lacks(Encoding::Gzip), has_brotli, accepted) {
        true => with_encodings(view.to_cached(), &[Encoding::Gzip]).await,
        false => None,
    };
    if !kept.first_to_complete() {
        return answer.map_or_else(
            || view.clone(),
            |answer| Arc::new(ReadyView::from_cached(&answer)),
        );
    }
    let Some(answer) = answer else {
        complete_later(
            app.clone(),
            key,
            kept.stamp.clone(),
            view.to_cached(),
            lacking,
        );
        return view.clone();
    };
    let ready = Arc::new(ReadyView::to_keep(&answer));
    app.cache().near_store(key, &kept.stamp, ready.clone());
    complete_later(app.clone(), key, kept.stamp.clone(), answer, lacking);
    ready
}

/// Makes the variants `made` lacks among `wanted` (if any: off the request's path, and
/// kept in this process at once), then stores the response in place of the rendering
/// stamped `stamp` for every server, unless a write retired it meanwhile.
fn complete_later(
    app: AppState,
    key: &str,
    stamp: Stamp,
    made: CachedResponse,
    wanted: Vec<Encoding>,
) {
    let key = key.to_owned();
    tokio::spawn(async move {
        let complete = if wanted.iter().any(|&encoding| made.lacks(encoding)) {
            let completing = move || {
                let complete = made.with_encodings(&wanted);
                (made, complete)
            };
            match tokio::task::spawn_blocking(completing).await {
                Ok((_, Some(complete))) => {
                    let ready = Arc::new(ReadyView::to_keep(&complete));
                    app.cache().near_store(&key, &stamp, ready);
                    complete
                }
                // Compression failed: whatever the caller made is still worth storing.
                Ok((made, None)) => made,
                Err(_) => return,
            }
        } else {
            made
        };
        let ttl = app.settings.view_ttl;
        let view_key = ViewKey::new(&key, VIEWS_OF);
        app.cache().restore(&view_key, stamp, &complete, ttl).await;
    });
}
