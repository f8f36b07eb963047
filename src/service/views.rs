//! Whole HTTP responses through the caches, for the view layer (which may not reach the
//! caches itself): the near-cache first, then the view level of the cache, then the
//! handler. A rendering is stored at once with its gzip variant; brotli, slower to make,
//! is made in the background after the first hit that would use it (until then the
//! entry serves gzip or identity), so pages retired before they are read again cost no
//! brotli at all.

use std::future::Future;
use std::sync::Arc;

use crate::service::cache::clock::Stamp;
use crate::service::cache::keys::{Resource, ViewKey};
use crate::service::cache::{CacheStatus, Kept};
use crate::service::catch_up_with_other_writers;
use crate::service::{App, AppState, Dependencies};
use crate::view::CachedResponse;
use crate::view::ReadyView;

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
/// process as well. `wants_brotli`: the client takes brotli.
pub async fn cached<E, F, Fut>(
    app: &AppState,
    key: &str,
    wants_brotli: bool,
    render: F,
) -> Result<(Arc<ReadyView>, CacheStatus), E>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<(CachedResponse, Dependencies), E>>,
{
    if let Some(kept) = near(app, key).await {
        if wants_brotli && kept.view.lacks_brotli() && kept.first_to_ask_for_brotli() {
            let view_key = ViewKey::new(key, VIEWS_OF);
            let cached = kept.view.to_cached();
            add_brotli_later(app.clone(), key, view_key, kept.stamp.clone(), cached);
        }
        return Ok((kept.view.clone(), CacheStatus::Hit));
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
    let Some(stamp) = &fetched.stamp else {
        return Ok((
            Arc::new(ReadyView::from_cached(&fetched.value)),
            fetched.status,
        ));
    };
    let ready = Arc::new(ReadyView::to_keep(&fetched.value));
    app.cache().near_store(key, stamp, ready.clone());
    Ok((ready, fetched.status))
}

/// Makes the brotli variant of a response, off the request's path, and stores it in
/// place of the rendering (and in this process's memory), unless a write retired it
/// meanwhile.
fn add_brotli_later(
    app: AppState,
    key: &str,
    view_key: ViewKey,
    stamp: Stamp,
    rendered: CachedResponse,
) {
    let key = key.to_owned();
    tokio::spawn(async move {
        let Ok(Some(complete)) = tokio::task::spawn_blocking(move || rendered.with_brotli()).await
        else {
            return;
        };
        let ttl = app.settings.view_ttl;
        app.cache()
            .restore(&view_key, stamp.clone(), &complete, ttl)
            .await;
        let ready = Arc::new(ReadyView::to_keep(&complete));
        app.cache().near_store(&key, &stamp, ready);
    });
}
