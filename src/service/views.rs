//! Whole HTTP responses through the caches, for the view layer (which may not reach the
//! caches itself): the near-cache first, then the view level of the cache, then the
//! handler. A rendering is stored at once; its brotli variant follows in the background
//! (until then the entry serves gzip or identity).

use std::future::Future;
use std::sync::Arc;

use crate::service::cache::CacheStatus;
use crate::service::cache::clock::Stamp;
use crate::service::cache::keys::{Resource, ViewKey};
use crate::service::catch_up_with_other_writers;
use crate::service::{App, AppState, Dependencies};
use crate::view::CachedResponse;
use crate::view::ReadyView;

/// Responses are cached per resource; every view so far shows properties.
const VIEWS_OF: Resource = Resource::Properties;

/// The ready response for the normalized URL `key` in this process, if it is current.
/// Other writers are caught up with first.
async fn near(app: &App, key: &str) -> Option<Arc<ReadyView>> {
    catch_up_with_other_writers(app).await;
    app.cache().near_get(key)
}

/// The response for `key`: ready in this process, from the cache, or `render`'s (with
/// what it depends on), stored unless a write came first and kept ready in this
/// process as well.
pub async fn cached<E, F, Fut>(
    app: &AppState,
    key: &str,
    render: F,
) -> Result<(Arc<ReadyView>, CacheStatus), E>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<(CachedResponse, Dependencies), E>>,
{
    if let Some(ready) = near(app, key).await {
        return Ok((ready, CacheStatus::Hit));
    }
    let view_key = ViewKey::new(key, VIEWS_OF);
    let rendered = || async {
        let (response, Dependencies(tags)) = render().await?;
        Ok((response, tags))
    };
    let fetched = app
        .cache()
        .fetch(&view_key, app.settings.view_ttl, rendered)
        .await?;
    let ready = Arc::new(ReadyView::from_cached(&fetched.value));
    if let Some(stamp) = fetched.stamp {
        app.cache().near_store(key, &stamp, ready.clone());
        if fetched.status == CacheStatus::Miss {
            add_brotli_later(app.clone(), key, view_key, stamp, fetched.value);
        }
    }
    Ok((ready, fetched.status))
}

/// Makes the brotli variant of a response just rendered, off the request's path, and
/// stores it in place of the rendering (and in this process's memory), unless a write
/// retired it meanwhile.
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
        let ready = Arc::new(ReadyView::from_cached(&complete));
        app.cache().near_store(&key, &stamp, ready);
    });
}

/// The cached response for `key`, if there is one; never renders (HEAD).
pub async fn peek(app: &App, key: &str) -> Option<Arc<ReadyView>> {
    if let Some(ready) = near(app, key).await {
        return Some(ready);
    }
    let cached = app.cache().peek(&ViewKey::new(key, VIEWS_OF)).await?;
    Some(Arc::new(ReadyView::from_cached(&cached)))
}
