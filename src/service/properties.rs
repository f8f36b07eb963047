//! Properties: searches and single properties are read through the cache; create,
//! update, replace, delete and import commit first and invalidate after, so no reader
//! can refill the cache with the pre-commit state.

use crate::config::DatabaseUrl;
use crate::domain::{NewProperty, PropertyChanges, PropertyQuery};
use crate::domain::{Property, RowFacts};
use crate::logging::{Failure, log_limited};
use crate::metrics::WritePhase;
use crate::metrics::events::Cause;
use crate::service::cache::CacheStatus;
use crate::service::cache::keys::{AllPropertiesKey, PropertyKey, PropertyQueryKey, Resource};
use crate::service::cache::tags::{self, TagSet};
use crate::service::cache::values::StoredPage;
use crate::service::db::DbError;
use crate::service::db::page_statement;
use crate::service::{App, Dependencies, property_rows};
use crate::service::{ServiceError, catch_up_with_other_writers};
use crate::test_hooks::pause;
use crate::view::precondition::Precondition;

/// One page of a search, and what it depends on. The first page of the default listing
/// is the logical entry `all_properties`; every other search has an entry of its own.
pub async fn list_properties(
    app: &App,
    query: &PropertyQuery,
) -> Result<(StoredPage, Dependencies), ServiceError> {
    pause!(app.cache().hooks(), InService);
    catch_up_with_other_writers(app).await;
    let load = |floor| async move {
        let known = app.counts.get(query);
        let sharing = known.is_some();
        let (page, counted) = property_rows::list_page(app.db(), query, known, floor).await?;
        app.metrics.record_count(sharing && counted.is_none());
        if let Some(counted) = counted {
            app.counts.insert(query, counted);
        }
        let tags = tags::page_tags(query, &page);
        Ok::<_, ServiceError>((StoredPage::new(page), tags))
    };
    let ttl = app.settings.data_ttl;
    if !query.is_default_listing() {
        let fetched = app
            .cache()
            .fetch(&PropertyQueryKey::new(query), ttl, load)
            .await?;
        return Ok((fetched.value, Dependencies(fetched.tags)));
    }
    let fetched = app.cache().fetch(&AllPropertiesKey, ttl, load).await?;
    match fetched.status {
        CacheStatus::Hit => tracing::info!("all_properties cache hit"),
        CacheStatus::Miss => tracing::info!(
            "all_properties cache miss: loaded {} properties from database",
            fetched.value.page.data.len()
        ),
    }
    Ok((fetched.value, Dependencies(fetched.tags)))
}

/// The one statement `query`'s page runs on a miss that counts, its values written in
/// as literals (for `EXPLAIN`, or pgbench); `None` for a search by text, which reads its
/// rows and its count in two.
pub fn page_statement(database: &DatabaseUrl, query: &PropertyQuery) -> Option<String> {
    let dialect = match database {
        DatabaseUrl::Postgres(_) => page_statement::Dialect::Postgres,
        DatabaseUrl::Sqlite(_) => page_statement::Dialect::Sqlite,
    };
    page_statement::literal(query, dialect)
}

/// One property, through the cache, and what it depends on. `NotFound` is not cached.
pub async fn find_property(app: &App, id: i64) -> Result<(Property, Dependencies), ServiceError> {
    catch_up_with_other_writers(app).await;
    let fetched = app
        .cache()
        .fetch(
            &PropertyKey(id),
            app.settings.data_ttl,
            |floor| async move {
                let property = property_rows::find(app.db(), id, floor).await?;
                Ok::<_, ServiceError>((property, tags::item_tags(id)))
            },
        )
        .await?;
    Ok((fetched.value, Dependencies(fetched.tags)))
}

pub async fn create_property(app: &App, new: &NewProperty) -> Result<Property, ServiceError> {
    pause!(app.cache().hooks(), InService);
    let (created, facts) = after_write(app, property_rows::insert(app.db(), new).await).await?;
    let what = format!("property {} created", created.id);
    invalidate_after_commit(app, &tags::write_tags(None, Some(&facts)), &what).await;
    Ok(created)
}

pub async fn update_property(
    app: &App,
    id: i64,
    changes: &PropertyChanges,
) -> Result<Property, ServiceError> {
    update_property_if(app, id, changes, &Precondition::default()).await
}

/// Changes the given fields, if the listing satisfies `precondition` (HTTP's If-Match
/// and If-None-Match) as the write finds it, locked; otherwise `PreconditionFailed`.
pub async fn update_property_if(
    app: &App,
    id: i64,
    changes: &PropertyChanges,
    precondition: &Precondition,
) -> Result<Property, ServiceError> {
    let written = property_rows::update(app.db(), id, changes, precondition).await;
    let update = after_write(app, written).await?;
    let changed = tags::write_tags(Some(&update.old_facts), Some(&update.new_facts));
    invalidate_after_commit(app, &changed, &format!("property {id} updated")).await;
    Ok(update.new)
}

/// Sets every field (HTTP PUT), if the listing satisfies `precondition`.
pub async fn replace_property(
    app: &App,
    id: i64,
    new: &NewProperty,
    precondition: &Precondition,
) -> Result<Property, ServiceError> {
    let changes = PropertyChanges {
        title: Some(new.title.clone()),
        description: Some(new.description.clone()),
        price: Some(new.price.clone()),
        location: Some(new.location.clone()),
    };
    update_property_if(app, id, &changes, precondition).await
}

pub async fn delete_property(app: &App, id: i64) -> Result<(), ServiceError> {
    delete_property_if(app, id, &Precondition::default()).await
}

/// Deletes the listing if it satisfies `precondition` (see [`update_property_if`]).
pub async fn delete_property_if(
    app: &App,
    id: i64,
    precondition: &Precondition,
) -> Result<(), ServiceError> {
    let deleted: Option<RowFacts> =
        after_write(app, property_rows::delete(app.db(), id, precondition).await).await?;
    let Some(facts) = deleted else {
        return Err(ServiceError::NotFound);
    };
    let what = format!("property {id} deleted");
    invalidate_after_commit(app, &tags::write_tags(Some(&facts), None), &what).await;
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
            .invalidate_everything(Cause::this_process(
                "an import the database did not confirm",
            ))
            .await;
    }
    let (inserted, changed) = imported?;
    if inserted > 0 {
        invalidate_after_commit(app, &changed, &format!("{inserted} properties imported")).await;
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
            "vacuumed and analyzed properties and their counts: counts and filtered pages are index-only scans"
        ),
        Ok(false) => {}
        Err(e) => tracing::warn!(
            error = %e,
            "cannot VACUUM (ANALYZE) properties and their counts after the import; autovacuum will, later"
        ),
    }
}

/// A write whose commit was not confirmed may be visible already: retire the cache now
/// as well (the database layer tells every server again if the commit lands later).
/// Which rows it changed is not known: everything.
async fn after_write<T>(app: &App, result: Result<T, DbError>) -> Result<T, ServiceError> {
    if let Err(DbError::OutcomeUnknown(_)) = &result {
        app.cache()
            .invalidate_everything(Cause::this_process("a write the database did not confirm"))
            .await;
    }
    Ok(result?)
}

/// Each write above has committed when this runs; only then is the cache told what it
/// changed, so no reader can cache the state from before the commit afterwards.
async fn invalidate_after_commit(app: &App, changed: &TagSet, what: &str) {
    pause!(app.cache().hooks(), BeforeInvalidate);
    let began = std::time::Instant::now();
    let cause = Cause::this_process(what);
    let invalidated = match &app.sqlite_writes {
        // A SQLite server reads its own commit back from the change log, with whatever
        // other processes committed since its last look: none of them is then taken as
        // seen without being retired.
        Some(writes) => writes.catch_up(app.cache(), cause).await,
        None => {
            // Replicas serve a read only once they replayed this commit: its position
            // raises their watermark. Unknown (the primary did not say), it makes the
            // watermark unknown, and reads go to the primary until it is known again.
            let written_at = app.db().position_for_watermark().await;
            app.cache()
                .invalidate_written(changed, cause, written_at)
                .await
        }
    };
    app.metrics
        .record_write_phase(WritePhase::Invalidation, began.elapsed());
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
