//! Both cache levels: hits that do no database work, and invalidation of both levels by
//! every write the service layer offers, after it commits.

use listings::domain::{PropertyChanges, PropertyInput};
use listings::http::HttpService;
use listings::metrics::CacheKind;
use listings::service::properties;

use crate::both_modes;
use crate::herd::fill_locks;
use crate::support::{
    TestEnv, TestResponse, create, get, get_paused_before_store, request, router,
};

both_modes!(
    view_hit_does_no_database_work,
    every_write_invalidates_both_levels,
    data_level_serves_other_views,
    a_miss_answers_gzip_at_once_and_brotli_follows,
    variants_are_made_when_a_client_first_takes_them
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

/// `GET /properties/` as a client that takes `encodings`.
async fn get_in(router: &HttpService, encodings: &str) -> TestResponse {
    let headers = [("accept-encoding", encodings)];
    let body = axum::body::Body::empty();
    request(router, "GET", "/properties/", &headers, body).await
}

/// Asks as a client that takes `encodings` until the answer is brotli (made in the
/// background), each answer before it in `meanwhile`; that answer, and its body decoded.
async fn until_brotli(
    router: &HttpService,
    encodings: &str,
    meanwhile: &str,
) -> (TestResponse, Vec<u8>) {
    use std::io::Read as _;

    for _ in 0..250 {
        let answer = get_in(router, encodings).await;
        if answer.header("content-encoding") == "br" {
            let mut decoded = Vec::new();
            brotli::Decompressor::new(&answer.body[..], 4096)
                .read_to_end(&mut decoded)
                .expect("brotli");
            return (answer, decoded);
        }
        assert_eq!(answer.header("content-encoding"), meanwhile);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("brotli did not follow");
}

/// A miss is stored and answered without waiting for brotli, the slowest encoding: the
/// first answer to a client that takes brotli or gzip is gzip; brotli follows in the
/// background after a hit that would use it, and decodes to the same body.
async fn a_miss_answers_gzip_at_once_and_brotli_follows(env: TestEnv) {
    let app = env.app().await;
    let router = router(&app);
    for i in 0..20 {
        create(
            &app,
            &format!("A villa with a long enough title to compress, number {i}"),
        )
        .await;
    }
    let get_in = |encodings| get_in(&router, encodings);
    let first = get_in("br, gzip").await;
    assert_eq!(first.x_cache(), "MISS");
    assert_eq!(
        first.header("content-encoding"),
        "gzip",
        "brotli is not made on the miss"
    );
    let identity = get_in("identity").await;
    assert_eq!(identity.x_cache(), "HIT");

    let (brotli, decoded) = until_brotli(&router, "br, gzip", "gzip").await;
    assert_eq!(brotli.x_cache(), "HIT");
    assert_eq!(decoded, identity.body);
    assert_ne!(
        brotli.header("etag"),
        first.header("etag"),
        "each encoding has its own tag"
    );
}

/// A rendering has only the variants its own client takes: one made for a client that
/// takes no compression has none, and the next client that takes gzip is answered in
/// gzip at once (a hit, the variant made on the spot and stored for the others), with
/// the gzip variant's ETag; brotli follows in the background.
async fn variants_are_made_when_a_client_first_takes_them(env: TestEnv) {
    use std::io::Read as _;

    let app = env.app().await;
    let router = router(&app);
    for i in 0..20 {
        let title = format!("A villa with a long enough title to compress, number {i}");
        create(&app, &title).await;
    }
    let get_in = |encodings| get_in(&router, encodings);
    let identity = get_in("identity").await;
    assert_eq!(identity.x_cache(), "MISS");
    assert_eq!(identity.header("content-encoding"), "");
    let gzip_tag = identity.header("etag").replace("\"", "") + "-gzip";
    for _ in 0..3 {
        let gzip = get_in("gzip").await;
        assert_eq!(gzip.x_cache(), "HIT");
        assert_eq!(gzip.header("content-encoding"), "gzip");
        assert_eq!(gzip.header("etag"), format!("\"{gzip_tag}\""));
        let mut decoded = Vec::new();
        flate2::read::GzDecoder::new(&gzip.body[..])
            .read_to_end(&mut decoded)
            .expect("gzip");
        assert_eq!(decoded, identity.body);
    }
    let (_, decoded) = until_brotli(&router, "br", "").await;
    assert_eq!(
        decoded, identity.body,
        "br only: the body as it is until then"
    );
    let plain = get_in("identity").await;
    assert_eq!(plain.x_cache(), "HIT");
    assert_eq!(plain.body, identity.body);
}

/// Entries in Redis travel in plain `GET` and `SET`, each with a script in one
/// transaction. A Redis that lost its scripts (`SCRIPT FLUSH`, as after a restart) gets
/// them again: a second server finds the first one's page in Redis, without the
/// database; after a write, the second server's new page is stored, and the first one
/// reads it from Redis. No value is left behind in a fill lock's key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(listings_test_services), ignore = "needs PostgreSQL and Redis")]
async fn entries_are_read_and_stored_after_redis_lost_its_scripts() {
    let redis = crate::support::redis_server::OwnRedis::start();
    let mut env = TestEnv::postgres_redis().await;
    env.redis_url = Some(redis.url());
    let (first, second) = (env.app().await, env.app().await);
    let (first_router, second_router) = (router(&first), router(&second));
    create(&first, "Villa").await;
    assert_eq!(get(&first_router, "/properties/").await.x_cache(), "MISS");

    let flush = || assert_eq!(redis.command(&["SCRIPT", "FLUSH"]).as_deref(), Some("OK"));
    flush();
    assert_read_from_redis(&second, &second_router, &["Villa"]).await;

    create(&first, "Casa").await;
    flush();
    let rendered = get(&second_router, "/properties/").await;
    assert_eq!(rendered.x_cache(), "MISS");
    assert_eq!(rendered.titles(), ["Casa", "Villa"]);
    assert_read_from_redis(&first, &first_router, &["Casa", "Villa"]).await;

    let fill_locks = redis.command(&["KEYS", "*:fill"]);
    assert_eq!(fill_locks.as_deref(), Some(""), "no staged value left");
    assert_eq!(
        first.metrics.cache_errors() + second.metrics.cache_errors(),
        0
    );
}

/// `app` serves `/properties/` as a hit showing `titles`, with no database query: from
/// the page another server stored in Redis, since its own near-cache holds no current
/// one.
async fn assert_read_from_redis(
    app: &listings::service::App,
    router: &listings::http::HttpService,
    titles: &[&str],
) {
    let queries = app.metrics.db_queries();
    let found = get(router, "/properties/").await;
    assert_eq!(found.x_cache(), "HIT", "another server's page, from Redis");
    assert_eq!(found.titles(), titles);
    assert_eq!(app.metrics.db_queries(), queries, "no database query");
}

/// The page of the retired-page tests below.
const RETIRED_PAGE: &str = "/properties/?location=malindi&ordering=price";

/// With Redis: [`RETIRED_PAGE`] cached (a miss, then a hit) and then retired by a
/// create.
async fn retired_page() -> (TestEnv, std::sync::Arc<listings::service::App>, HttpService) {
    let env = TestEnv::postgres_redis().await;
    let app = env.app().await;
    let router = router(&app);
    create(&app, "Villa").await;
    assert_eq!(get(&router, RETIRED_PAGE).await.x_cache(), "MISS");
    assert_eq!(get(&router, RETIRED_PAGE).await.x_cache(), "HIT");
    create(&app, "Cottage").await;
    (env, app, router)
}

/// With Redis, a page whose view a write retired loads its data from the database without
/// looking it up (a round trip or two for a retired entry): the write retired the data
/// too.
/// Shown by a data entry stored again meanwhile, which the rendering does not use, where
/// a view that had expired instead is rebuilt from it (`data_level_serves_other_views`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(listings_test_services), ignore = "needs PostgreSQL and Redis")]
async fn a_retired_page_loads_its_data_without_looking_it_up() {
    let (_env, app, router) = retired_page().await;
    let url = RETIRED_PAGE;
    let query =
        listings::domain::PropertyQuery::from_query_string("location=malindi&ordering=price")
            .expect("a valid search");
    let (stored_again, _) = properties::list_properties(&app, &query)
        .await
        .expect("the data entry, loaded and stored again");
    assert_eq!(stored_again.page.count, 2);
    let data_hits = app.metrics.cache(CacheKind::Queries).hits;
    let queries = app.metrics.db_queries();

    let rendered = get(&router, url).await;
    assert_eq!(rendered.x_cache(), "MISS", "the view was retired");
    assert_eq!(rendered.json()["count"], 2);
    assert_eq!(
        (
            app.metrics.cache(CacheKind::Queries).hits,
            app.metrics.db_queries()
        ),
        (data_hits, queries + 1),
        "loaded from the database, the data entry not looked up"
    );
    assert_eq!(get(&router, url).await.x_cache(), "HIT");
}

/// A page a write retired, whose copy this server still holds, takes its fill lock in
/// the round trip that looks it up, and stores its data with itself: two round trips to
/// Redis in all (a new page: three, its data looked up too). Where another server
/// stored a current page since, the lookup finds it, and leaves no lock behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(listings_test_services), ignore = "needs PostgreSQL and Redis")]
async fn a_retired_page_takes_its_fill_lock_in_its_lookup() {
    let (env, app, router) = retired_page().await;
    let url = RETIRED_PAGE;
    let trips = app.metrics.entry_round_trips();
    let new_page = "/properties/?location=malindi&ordering=-price";
    assert_eq!(get(&router, new_page).await.x_cache(), "MISS");
    assert_eq!(
        app.metrics.entry_round_trips() - trips,
        3,
        "the page's lookup, its data's lookup, both stored together"
    );
    let (trips, queries) = (app.metrics.entry_round_trips(), app.metrics.db_queries());
    // Paused before its data's store: the page's lock is held, taken by its lookup.
    let (pause, reader) = get_paused_before_store(&app, &router, url).await;
    let locks = fill_locks(&env).await;
    pause.release();
    assert!(
        locks.len() == 1 && locks[0].0.contains("location=malindi&ordering=price"),
        "the page's lock alone: {locks:?}"
    );
    let rendered = reader.await.expect("reader");
    assert_eq!(rendered.x_cache(), "MISS", "the view was retired");
    assert_eq!(rendered.json()["count"], 2);
    assert_eq!(
        (
            app.metrics.entry_round_trips() - trips,
            app.metrics.db_queries() - queries
        ),
        (2, 1),
        "one round trip to look the page up and take its lock, one statement, one to store both levels"
    );

    // Another server renders the page after the next write; this one still holds the
    // copy that write retired.
    let other = env.app().await;
    let other_router = crate::support::router(&other);
    create(&app, "Bungalow").await;
    let fresh = get(&other_router, url).await;
    assert_eq!(
        (fresh.x_cache(), fresh.json()["count"].clone()),
        ("MISS", 3.into())
    );
    let queries = app.metrics.db_queries();
    let found = get(&router, url).await;
    assert_eq!(found.x_cache(), "HIT", "the other server's page, current");
    assert_eq!(found.body, fresh.body);
    assert_eq!(app.metrics.db_queries(), queries);
    assert_eq!(
        fill_locks(&env).await,
        Vec::new(),
        "no fill lock left behind"
    );
}

/// The data a retired page loads without looking it up is stamped before its load: a
/// write that lands between that load and its store retires what is stored, for this
/// server and for another one that reads the data level.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(listings_test_services), ignore = "needs PostgreSQL and Redis")]
async fn a_retired_pages_late_data_is_retired_by_a_write_during_its_load() {
    let env = TestEnv::postgres_redis().await;
    let app = env.app().await;
    let router = router(&app);
    let url = "/properties/?location=malindi&ordering=price";
    create(&app, "Old").await;
    assert_eq!(get(&router, url).await.x_cache(), "MISS");
    create(&app, "Mid").await;

    // The page's rendering, its view retired by "Mid", paused before its data's store.
    let (pause, slow_reader) = get_paused_before_store(&app, &router, url).await;
    create(&app, "New").await;
    pause.release();
    let slow = slow_reader.await.expect("reader");
    assert_eq!(
        slow.json()["count"],
        2,
        "the reader loaded before the write"
    );

    let other = env.app().await;
    let query =
        listings::domain::PropertyQuery::from_query_string("location=malindi&ordering=price")
            .expect("a valid search");
    let (page, _) = properties::list_properties(&other, &query)
        .await
        .expect("the data level, from another server");
    assert_eq!(
        page.page.count, 3,
        "the late data store is retired for every server"
    );
    let next = get(&router, url).await;
    assert_eq!(
        (next.x_cache(), next.json()["count"].as_i64()),
        ("MISS", Some(3))
    );
}
