//! Properties: list and get through the cache; create, update and delete commit first
//! and invalidate after, so no reader can refill the cache with the pre-commit state.

use crate::app::App;
use crate::cache::CacheStatus;
use crate::cache::keys::{AllPropertiesKey, Resource};
use crate::db::models::Property;
use crate::db::{DbConn, DbError};
use crate::domain::{NewProperty, PropertyChanges};
use crate::services::{ServiceError, catch_up_with_other_writers};
use crate::test_hooks::Point;
use crate::with_connection;

/// Every property, newest first, from the `all_properties` cache entry when fresh.
pub async fn list_properties(app: &App) -> Result<Vec<Property>, ServiceError> {
    catch_up_with_other_writers(app).await;
    let (properties, status) = app
        .cache
        .get_or_load(&AllPropertiesKey, app.settings.data_ttl, || async {
            let mut conn = app.db.conn().await?;
            let rows =
                with_connection!(&mut conn, |c, repo| repo::properties::list_newest_first(c)
                    .await)?;
            tracing::info!(
                "all_properties cache miss: loaded {} properties from database",
                rows.len()
            );
            Ok::<_, ServiceError>(rows)
        })
        .await?;
    if status == CacheStatus::Hit {
        tracing::info!("all_properties cache hit");
    }
    Ok(properties)
}

pub async fn find_property(app: &App, id: i64) -> Result<Property, ServiceError> {
    let mut conn = app.db.conn().await?;
    Ok(with_connection!(&mut conn, |c, repo| {
        repo::properties::find(c, id).await
    })?)
}

pub async fn create_property(app: &App, new: &NewProperty) -> Result<Property, ServiceError> {
    let mut conn = app.db.conn().await?;
    let created = with_connection!(&mut conn, |c, repo| repo::properties::insert(c, new).await)?;
    drop(conn);
    invalidate_after_commit(app, created.id, "created").await;
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
    invalidate_after_commit(app, id, "updated").await;
    Ok(updated)
}

pub async fn delete_property(app: &App, id: i64) -> Result<(), ServiceError> {
    let mut conn = app.db.conn().await?;
    let deleted = with_connection!(&mut conn, |c, repo| repo::properties::delete(c, id).await)?;
    drop(conn);
    if !deleted {
        return Err(ServiceError::NotFound);
    }
    invalidate_after_commit(app, id, "deleted").await;
    Ok(())
}

/// Each write above is one statement, committed when it returns; only then is the
/// cache told, so no reader can cache the state from before the commit afterwards.
async fn invalidate_after_commit(app: &App, id: i64, change: &str) {
    app.cache.hooks().pause(Point::BeforeInvalidate).await;
    if app.cache.invalidate(Resource::Properties).await {
        tracing::info!("cache invalidated: property {id} {change}");
    } else {
        tracing::warn!(
            "property {id} {change}, but the cache could not be reached to invalidate it"
        );
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
