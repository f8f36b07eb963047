//! Both cache levels: hits that do no database work, and invalidation of both levels by
//! every write the service layer offers, after it commits.

use listings::domain::{PropertyChanges, PropertyInput};
use listings::metrics::CacheKind;
use listings::service::properties;

use crate::both_modes;
use crate::support::{TestEnv, create, get, router};

both_modes!(
    view_hit_does_no_database_work,
    every_write_invalidates_both_levels,
    data_level_serves_other_views
);

async fn view_hit_does_no_database_work(env: TestEnv) {
    let app = env.app().await;
    let router = router(&app);
    create(&app, "Villa").await;
    let miss = get(&router, "/properties/").await;
    assert_eq!(miss.x_cache(), "MISS");
    let queries = app.metrics.db_queries();
    for _ in 0..3 {
        let hit = get(&router, "/properties/").await;
        assert_eq!(hit.x_cache(), "HIT");
        assert_eq!(hit.body, miss.body, "the stored bytes go out as they are");
        assert_eq!(hit.headers["content-type"], "application/json");
    }
    assert_eq!(
        app.metrics.db_queries(),
        queries,
        "hits did no database query"
    );
    assert_eq!(app.metrics.cache(CacheKind::View).hits, 3);
    assert_eq!(app.metrics.cache(CacheKind::View).misses, 1);
}

async fn every_write_invalidates_both_levels(env: TestEnv) {
    let app = env.app().await;
    let router = router(&app);
    let villa = create(&app, "Villa").await;
    assert_eq!(get(&router, "/properties/").await.titles(), ["Villa"]);
    assert_eq!(get(&router, "/properties/").await.x_cache(), "HIT");

    let flat = create(&app, "Flat").await;
    let after_create = get(&router, "/properties/").await;
    assert_eq!(after_create.x_cache(), "MISS");
    assert_eq!(after_create.titles(), ["Flat", "Villa"]);

    let changes = PropertyChanges::parse(PropertyInput {
        title: Some("Renamed villa"),
        ..Default::default()
    })
    .expect("changes");
    let updated = properties::update_property(&app, villa.id, &changes)
        .await
        .expect("update");
    assert_eq!(updated.title, "Renamed villa");
    let after_update = get(&router, "/properties/").await;
    assert_eq!(after_update.x_cache(), "MISS");
    assert_eq!(after_update.titles(), ["Flat", "Renamed villa"]);

    properties::delete_property(&app, flat.id)
        .await
        .expect("delete");
    let after_delete = get(&router, "/properties/").await;
    assert_eq!(after_delete.x_cache(), "MISS");
    assert_eq!(after_delete.titles(), ["Renamed villa"]);

    // The data level was retired too: every miss above reloaded from the database.
    let data = app.metrics.cache(CacheKind::AllProperties);
    assert_eq!((data.hits, data.misses), (0, 4), "{data:?}");

    // Writes to missing rows change nothing and say so.
    assert!(matches!(
        properties::delete_property(&app, flat.id).await,
        Err(listings::service::ServiceError::NotFound)
    ));
    assert!(matches!(
        properties::update_property(&app, 999_999, &changes).await,
        Err(listings::service::ServiceError::NotFound)
    ));
    assert_eq!(get(&router, "/properties/").await.x_cache(), "HIT");
}

/// The levels do their own jobs: a view entry that expired is rebuilt from the data
/// entry, without the database; `/properties` and a decorated URL are the same view.
async fn data_level_serves_other_views(env: TestEnv) {
    let mut settings = env.settings();
    settings.view_ttl = std::time::Duration::from_millis(300);
    let app = env.app_with(settings).await;
    let router = router(&app);
    create(&app, "Villa").await;
    assert_eq!(get(&router, "/properties/").await.x_cache(), "MISS");
    assert_eq!(
        get(&router, "/properties?utm_source=mail&page=1")
            .await
            .x_cache(),
        "HIT"
    );

    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let queries = app.metrics.db_queries();
    let rebuilt = get(&router, "/properties/").await;
    assert_eq!(rebuilt.x_cache(), "MISS", "the view entry expired");
    assert_eq!(rebuilt.titles(), ["Villa"]);
    assert_eq!(
        app.metrics.db_queries(),
        queries,
        "rebuilt from the all_properties entry"
    );
    assert_eq!(app.metrics.cache(CacheKind::AllProperties).hits, 1);
}
