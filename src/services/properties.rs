//! Properties: searches and single properties are read through the cache; create,
//! update, replace, delete and import commit first and invalidate after, so no reader
//! can refill the cache with the pre-commit state.

use crate::app::App;
use crate::cache::CacheStatus;
use crate::cache::keys::{AllPropertiesKey, PropertyKey, PropertyQueryKey, Resource};
use crate::db::models::{Property, PropertyPage};
use crate::db::{DbConn, DbError};
use crate::domain::{NewProperty, PropertyChanges, PropertyQuery};
use crate::services::{ServiceError, catch_up_with_other_writers};
use crate::test_hooks::Point;
use crate::with_connection;

/// One page of a search. The first page of the default listing is the logical entry
/// `all_properties`; every other search has an entry of its own.
pub async fn list_properties(
    app: &App,
    query: &PropertyQuery,
) -> Result<PropertyPage, ServiceError> {
    catch_up_with_other_writers(app).await;
    let load = || async {
        let mut conn = app.db.conn().await?;
        let page = with_connection!(&mut conn, |c, repo| repo::properties::list_page(c, query)
            .await)?;
        Ok::<_, ServiceError>(page)
    };
    let ttl = app.settings.data_ttl;
    if !query.is_default_listing() {
        let (page, _) = app
            .cache
            .get_or_load(&PropertyQueryKey::new(query), ttl, load)
            .await?;
        return Ok(page);
    }
    let (page, status) = app.cache.get_or_load(&AllPropertiesKey, ttl, load).await?;
    match status {
        CacheStatus::Hit => tracing::info!("all_properties cache hit"),
        CacheStatus::Miss => tracing::info!(
            "all_properties cache miss: loaded {} properties from database",
            page.data.len()
        ),
    }
    Ok(page)
}

/// One property, through the cache. `NotFound` is not cached.
pub async fn find_property(app: &App, id: i64) -> Result<Property, ServiceError> {
    catch_up_with_other_writers(app).await;
    let (property, _) = app
        .cache
        .get_or_load(&PropertyKey(id), app.settings.data_ttl, || async {
            let mut conn = app.db.conn().await?;
            let property =
                with_connection!(&mut conn, |c, repo| repo::properties::find(c, id).await)?;
            Ok::<_, ServiceError>(property)
        })
        .await?;
    Ok(property)
}

pub async fn create_property(app: &App, new: &NewProperty) -> Result<Property, ServiceError> {
    let mut conn = app.db.conn().await?;
    let created = with_connection!(&mut conn, |c, repo| repo::properties::insert(c, new).await)?;
    drop(conn);
    invalidate_after_commit(app, &format!("property {} created", created.id)).await;
    Ok(created)
}

pub async fn update_property(
    app: &App,
    id: i64,
    changes: &PropertyChanges,
) -> Result<Property, ServiceError> {
    let mut conn = app.db.conn().await?;
    let updated = with_connection!(&mut conn, |c, repo| repo::properties::update(
        c, id, changes
    )
    .await)?;
    drop(conn);
    invalidate_after_commit(app, &format!("property {id} updated")).await;
    Ok(updated)
}

/// Sets every field (HTTP PUT).
pub async fn replace_property(
    app: &App,
    id: i64,
    new: &NewProperty,
) -> Result<Property, ServiceError> {
    let changes = PropertyChanges {
        title: Some(new.title.clone()),
        description: Some(new.description.clone()),
        price: Some(new.price.clone()),
        location: Some(new.location.clone()),
    };
    update_property(app, id, &changes).await
}

pub async fn delete_property(app: &App, id: i64) -> Result<(), ServiceError> {
    let mut conn = app.db.conn().await?;
    let deleted = with_connection!(&mut conn, |c, repo| repo::properties::delete(c, id).await)?;
    drop(conn);
    if !deleted {
        return Err(ServiceError::NotFound);
    }
    invalidate_after_commit(app, &format!("property {id} deleted")).await;
    Ok(())
}

/// Inserts every batch `next_batch` yields, all in one transaction or none, then
/// invalidates once. `progress` hears the running total after each batch.
pub async fn import_properties<F>(
    app: &App,
    mut next_batch: impl FnMut() -> anyhow::Result<Option<Vec<NewProperty>>> + Send,
    mut progress: F,
) -> anyhow::Result<usize>
where
    F: FnMut(usize) + Send,
{
    use diesel_async::AsyncConnection as _;

    let mut conn = app.db.conn().await?;
    let inserted = with_connection!(&mut conn, |c, repo| {
        c.transaction::<_, anyhow::Error, _>(async |tx| {
            let mut total = 0;
            while let Some(batch) = next_batch()? {
                total += repo::properties::insert_batch(tx, batch).await?;
                progress(total);
            }
            Ok(total)
        })
        .await
    })?;
    drop(conn);
    if inserted > 0 {
        invalidate_after_commit(app, &format!("{inserted} properties imported")).await;
    }
    Ok(inserted)
}

/// Each write above has committed when this runs; only then is the cache told, so no
/// reader can cache the state from before the commit afterwards.
async fn invalidate_after_commit(app: &App, what: &str) {
    app.cache.hooks().pause(Point::BeforeInvalidate).await;
    if app.cache.invalidate(Resource::Properties).await {
        tracing::info!("cache invalidated: {what}");
    } else {
        tracing::warn!("{what}, but the cache could not be reached to invalidate it");
        announce_unconfirmed_invalidation(app, Resource::Properties).await;
    }
}

/// PostgreSQL servers sharing Redis skip notifications of this application's writes,
/// trusting the writer's invalidation; when it failed, a notification of unknown origin
/// makes each of them invalidate for itself. (SQLite servers notice every commit.)
async fn announce_unconfirmed_invalidation(app: &App, resource: Resource) {
    let announced = match app.db.conn().await {
        Ok(DbConn::Pg(mut conn)) => crate::db::notify::announce_change(&mut conn, resource.name())
            .await
            .map_err(DbError::from),
        Ok(DbConn::Sqlite(_)) => return,
        Err(e) => Err(e),
    };
    if let Err(e) = announced {
        tracing::error!(error = %e, "cannot notify servers of a change the cache did not hear of");
    }
}
