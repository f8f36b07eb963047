//! Whole HTTP responses through the view cache, for the view-cache layer (which may
//! not reach the cache itself).

use std::future::Future;

use crate::app::App;
use crate::cache::CacheStatus;
use crate::cache::keys::ViewKey;
use crate::cache::values::CachedResponse;
use crate::services::catch_up_with_other_writers;

/// The cached response for `key`, or `render`'s, stored unless a write came first.
pub async fn cached<E, F, Fut>(
    app: &App,
    key: &ViewKey,
    render: F,
) -> Result<(CachedResponse, CacheStatus), E>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<CachedResponse, E>>,
{
    catch_up_with_other_writers(app).await;
    app.cache()
        .get_or_load(key, app.settings.view_ttl, render)
        .await
}

/// The cached response for `key`, if there is one; never renders (HEAD).
pub async fn peek(app: &App, key: &ViewKey) -> Option<CachedResponse> {
    catch_up_with_other_writers(app).await;
    app.cache().peek(key).await
}
