//! Properties: searches and single properties are read through the cache; create,
//! update, replace, delete and import commit first and invalidate after, so no reader
//! can refill the cache with the pre-commit state.

use crate::domain::{NewProperty, PropertyChanges, PropertyQuery};
use crate::domain::{Property, PropertyPage};
use crate::logging::{Failure, log_limited};
use crate::metrics::events::Cause;
use crate::service::cache::CacheStatus;
use crate::service::cache::keys::{AllPropertiesKey, PropertyKey, PropertyQueryKey, Resource};
use crate::service::db::DbError;
use crate::service::{App, property_rows};
use crate::service::{ServiceError, catch_up_with_other_writers};
use crate::test_hooks::pause;

/// One page of a search. The first page of the default listing is the logical entry
/// `all_properties`; every other search has an entry of its own.
pub async fn list_properties(
    app: &App,
    query: &PropertyQuery,
) -> Result<PropertyPage, ServiceError> {
    pause!(app.cache().hooks(), InService);
    catch_up_with_other_writers(app).await;
    let load = || async { Ok::<_, ServiceError>(property_rows::list_page(app.db(), query).await?) };
    let ttl = app.settings.data_ttl;
    if !query.is_default_listing() {
        let (page, _) = app
            .cache()
            .get_or_load(&PropertyQueryKey::new(query), ttl, load)
            .await?;
        return Ok(page);
    }
    let (page, status) = app
        .cache()
        .get_or_load(&AllPropertiesKey, ttl, load)
        .await?;
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
        .cache()
        .get_or_load(&PropertyKey(id), app.settings.data_ttl, || async {
            Ok::<_, ServiceError>(property_rows::find(app.db(), id).await?)
        })
        .await?;
    Ok(property)
}

pub async fn create_property(app: &App, new: &NewProperty) -> Result<Property, ServiceError> {
    pause!(app.cache().hooks(), InService);
    let created = after_write(app, property_rows::insert(app.db(), new).await).await?;
    invalidate_after_commit(app, &format!("property {} created", created.id)).await;
    Ok(created)
}

pub async fn update_property(
    app: &App,
    id: i64,
    changes: &PropertyChanges,
) -> Result<Property, ServiceError> {
    let updated = after_write(app, property_rows::update(app.db(), id, changes).await).await?;
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
    let deleted = after_write(app, property_rows::delete(app.db(), id).await).await?;
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
    next_batch: impl FnMut() -> anyhow::Result<Option<Vec<NewProperty>>> + Send,
    progress: F,
) -> anyhow::Result<usize>
where
    F: FnMut(usize) + Send,
{
    let imported = property_rows::import(app.db(), next_batch, progress).await;
    if let Err(e) = &imported
        && let Some(DbError::OutcomeUnknown(_)) = e.downcast_ref::<DbError>()
    {
        app.cache()
            .invalidate(
                Resource::Properties,
                Cause::this_process("an import the database did not confirm"),
            )
            .await;
    }
    let inserted = imported?;
    if inserted > 0 {
        invalidate_after_commit(app, &format!("{inserted} properties imported")).await;
        settle_after_bulk_load(app).await;
    }
    Ok(inserted)
}

/// The import is in; making its rows cheap to count is worth a wait, but not a failure.
async fn settle_after_bulk_load(app: &App) {
    let started = std::time::Instant::now();
    match app.db().settle_after_bulk_load().await {
        Ok(true) => tracing::info!(
            elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "vacuumed and analyzed properties: counts and filtered pages are index-only scans"
        ),
        Ok(false) => {}
        Err(e) => tracing::warn!(
            error = %e,
            "cannot VACUUM (ANALYZE) properties after the import; autovacuum will, later"
        ),
    }
}

/// A write whose commit was not confirmed may be visible already: retire the cache now
/// as well (the database layer tells every server again if the commit lands later).
async fn after_write<T>(app: &App, result: Result<T, DbError>) -> Result<T, ServiceError> {
    if let Err(DbError::OutcomeUnknown(_)) = &result {
        app.cache()
            .invalidate(
                Resource::Properties,
                Cause::this_process("a write the database did not confirm"),
            )
            .await;
    }
    Ok(result?)
}

/// Each write above has committed when this runs; only then is the cache told, so no
/// reader can cache the state from before the commit afterwards.
async fn invalidate_after_commit(app: &App, what: &str) {
    pause!(app.cache().hooks(), BeforeInvalidate);
    // A SQLite server sees its own commits in the WAL index too: what it reads there
    // now, before invalidating, this invalidation covers.
    let seen = app
        .sqlite_writes
        .as_ref()
        .map(|watch| (watch, watch.changed()));
    let invalidated = app
        .cache()
        .invalidate(Resource::Properties, Cause::this_process(what))
        .await;
    if let Some((watch, Some(change))) = seen {
        watch.acknowledge(change);
    }
    if invalidated {
        tracing::info!("cache invalidated: {what}");
    } else {
        log_limited!(
            warn,
            Failure::Invalidation,
            "{what}, but the cache could not be reached to invalidate it"
        );
        // PostgreSQL servers sharing Redis skip notifications of this application's
        // writes, trusting the writer's invalidation; since it failed, a notification
        // of unknown origin makes each of them invalidate for itself. (SQLite servers
        // notice every commit.)
        if let Err(e) = app
            .db()
            .announce_unconfirmed_change(Resource::Properties.name())
            .await
        {
            log_limited!(
                error,
                Failure::Database,
                error = %e,
                "cannot notify servers of a change the cache did not hear of"
            );
        }
    }
}
