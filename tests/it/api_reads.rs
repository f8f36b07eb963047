//! Reading over HTTP: filters, order, pages, single properties, the parameter rules,
//! cache keys that ignore noise, and conditional GET.

use listings::service::properties;

use crate::both_modes;
use crate::support::{TestEnv, get, new_property, request, router};

both_modes!(
    filters_order_and_pages,
    invalid_parameters_are_400_naming_the_rule,
    noise_in_the_query_does_not_split_the_cache,
    single_property_is_cached_and_404_otherwise,
    text_filters_fold_unicode_case,
    head_is_answered_from_the_get_entry,
    conditional_get_with_strong_etags
);

async fn seed_three(app: &listings::service::App) -> Vec<i64> {
    let mut ids = Vec::new();
    for (title, price, location) in [
        ("Sea villa", "900000.00", "Malindi"),
        ("Town flat", "120000.50", "Nairobi"),
        ("Beach hut", "45000.00", "malindi"),
    ] {
        let mut new = new_property(title, price, location);
        new.description = format!("{title} with a SEA breeze");
        if title == "Town flat" {
            new.description = "Close to the market".into();
        }
        ids.push(
            properties::create_property(app, &new)
                .await
                .expect("create")
                .id,
        );
    }
    ids
}

async fn filters_order_and_pages(env: TestEnv) {
    let app = env.app().await;
    let router = router(&app);
    seed_three(&app).await;

    let all = get(&router, "/properties/").await;
    assert_eq!(all.json()["count"], 3);
    assert_eq!(
        all.titles(),
        ["Beach hut", "Town flat", "Sea villa"],
        "newest first"
    );

    let in_malindi = get(&router, "/properties/?location=MALINDI").await;
    assert_eq!(
        in_malindi.titles(),
        ["Beach hut", "Sea villa"],
        "exact location, case-insensitive"
    );
    assert_eq!(
        get(&router, "/properties/?location=Malin").await.json()["count"],
        0,
        "exact, not a substring"
    );

    let priced = get(&router, "/properties/?min_price=45000&max_price=120000.50").await;
    assert_eq!(
        priced.titles(),
        ["Beach hut", "Town flat"],
        "bounds are inclusive"
    );

    let search = get(&router, "/properties/?search=sea").await;
    assert_eq!(
        search.titles(),
        ["Beach hut", "Sea villa"],
        "title or description, case-insensitive"
    );
    assert_eq!(
        get(&router, "/properties/?search=%25").await.json()["count"],
        0,
        "% matches itself"
    );

    for (ordering, expected) in [
        ("price", ["Beach hut", "Town flat", "Sea villa"]),
        ("-price", ["Sea villa", "Town flat", "Beach hut"]),
        ("id", ["Sea villa", "Town flat", "Beach hut"]),
        ("-id", ["Beach hut", "Town flat", "Sea villa"]),
        ("created_at", ["Sea villa", "Town flat", "Beach hut"]),
        ("-created_at", ["Beach hut", "Town flat", "Sea villa"]),
    ] {
        let sorted = get(&router, &format!("/properties/?ordering={ordering}")).await;
        assert_eq!(sorted.titles(), expected, "ordering={ordering}");
    }

    let first = get(&router, "/properties/?ordering=price&page_size=2")
        .await
        .json();
    assert_eq!(first["count"], 3);
    assert_eq!(first["previous"], serde_json::Value::Null);
    assert_eq!(
        first["next"],
        "/properties/?ordering=price&page=2&page_size=2"
    );
    let second = get(&router, first["next"].as_str().expect("next")).await;
    assert_eq!(second.titles(), ["Sea villa"]);
    assert_eq!(second.json()["next"], serde_json::Value::Null);
    assert_eq!(
        second.json()["previous"],
        "/properties/?ordering=price&page_size=2"
    );
    let beyond = get(&router, "/properties/?page=9").await.json();
    assert_eq!(
        (
            beyond["count"].as_i64(),
            beyond["data"].as_array().map(Vec::len)
        ),
        (Some(3), Some(0))
    );
    assert_eq!(
        get(&router, "/properties/?page_size=1000").await.json()["count"],
        3
    );
}

async fn invalid_parameters_are_400_naming_the_rule(env: TestEnv) {
    let app = env.app().await;
    let router = router(&app);
    for (query, expected) in [
        ("page=0", "page: must be a whole number from 1"),
        (
            "page_size=5000",
            "page_size: must be a whole number from 1 to 1000",
        ),
        ("min_price=abc", "min_price: must be a decimal number"),
        (
            "max_price=1.005",
            "max_price: must have at most 2 decimal places",
        ),
        (
            "ordering=foo",
            "ordering: must be one of price, -price, created_at, -created_at, id, -id",
        ),
        ("location=", "location: must not be empty"),
        ("ordering=", "ordering: must not be empty"),
        ("search=%E2%80%8B%20", "search: must not be empty"),
        (
            "search=%00",
            "search: must not contain control characters (found NUL)",
        ),
        (
            "location=Mal%0Aindi",
            "location: must not contain control characters (found U+000A)",
        ),
        ("page=%2B2", "page: must be a whole number"),
    ] {
        let response = get(&router, &format!("/properties/?{query}")).await;
        assert_eq!(response.status, 400, "{query}");
        let error = response.json()["error"].as_str().expect("error").to_owned();
        assert!(error.starts_with(expected), "{query}: {error}");
    }
    let crossed = get(&router, "/properties/?min_price=10&max_price=5").await;
    assert_eq!(crossed.status, 200, "crossed bounds match nothing");
    assert_eq!(crossed.json()["count"], 0);
}

async fn noise_in_the_query_does_not_split_the_cache(env: TestEnv) {
    let app = env.app().await;
    let router = router(&app);
    seed_three(&app).await;
    assert_eq!(
        get(&router, "/properties/?location=Malindi&ordering=price")
            .await
            .x_cache(),
        "MISS"
    );
    for same in [
        "/properties/?ordering=price&location=malindi",
        "/properties/?utm_source=news&location=Malindi&ordering=price&fbclid=x",
        "/properties?location=malindi&page=1&page_size=100&ordering=price",
    ] {
        let response = get(&router, same).await;
        assert_eq!(response.x_cache(), "HIT", "{same}");
        assert_eq!(response.titles(), ["Beach hut", "Sea villa"]);
    }
    assert_eq!(
        get(&router, "/properties/?utm_campaign=1").await.x_cache(),
        "MISS"
    );
    assert_eq!(
        get(&router, "/properties/").await.x_cache(),
        "HIT",
        "utm_campaign did not enter the key"
    );
}

async fn single_property_is_cached_and_404_otherwise(env: TestEnv) {
    let app = env.app().await;
    let router = router(&app);
    let ids = seed_three(&app).await;
    let path = format!("/properties/{}/", ids[1]);
    let first = get(&router, &path).await;
    assert_eq!((first.status.as_u16(), first.x_cache()), (200, "MISS"));
    assert_eq!(first.json()["title"], "Town flat");
    assert_eq!(first.json()["price"], "120000.50");
    let queries = app.metrics.db_queries();
    assert_eq!(get(&router, &path).await.x_cache(), "HIT");
    assert_eq!(app.metrics.db_queries(), queries);

    for missing in ["/properties/999999/", "/properties/abc/", "/properties/-1/"] {
        let response = get(&router, missing).await;
        assert_eq!(response.status, 404, "{missing}");
        assert_eq!(response.json()["error"], "not found");
    }
}

async fn conditional_get_with_strong_etags(env: TestEnv) {
    let app = env.app().await;
    let router = router(&app);
    let ids = seed_three(&app).await;
    for path in [
        "/properties/".to_owned(),
        format!("/properties/{}/", ids[0]),
    ] {
        let full = get(&router, &path).await;
        let etag = full.header("etag").to_owned();
        assert!(
            etag.starts_with('"') && etag.ends_with('"') && !etag.starts_with("W/"),
            "strong: {etag}"
        );
        assert_eq!(
            full.header("cache-control"),
            "no-cache",
            "browsers revalidate"
        );
        assert_eq!(
            get(&router, &path).await.header("etag"),
            etag,
            "the same bytes, the same tag"
        );

        let revalidated = request(
            &router,
            "GET",
            &path,
            &[("if-none-match", &etag)],
            Default::default(),
        )
        .await;
        assert_eq!(revalidated.status, 304, "{path}");
        assert!(revalidated.body.is_empty());
        assert_eq!(revalidated.header("etag"), etag);
        let other = request(
            &router,
            "GET",
            &path,
            &[("if-none-match", "\"nope\"")],
            Default::default(),
        )
        .await;
        assert_eq!(other.status, 200);
    }
    let list_etag = get(&router, "/properties/").await.header("etag").to_owned();
    crate::support::create(&app, "Newer").await;
    let changed = request(
        &router,
        "GET",
        "/properties/",
        &[("if-none-match", &list_etag)],
        Default::default(),
    )
    .await;
    assert_eq!(
        changed.status, 200,
        "a write changes the list, so the old tag no longer matches"
    );
    assert_ne!(changed.header("etag"), list_etag);
}

async fn text_filters_fold_unicode_case(env: TestEnv) {
    let app = env.app().await;
    let router = router(&app);
    properties::create_property(&app, &new_property("Ÿacht ÉTÉ house", "1.00", "Éldoret"))
        .await
        .expect("create");
    for query in [
        "location=%C3%A9ldoret",
        "location=%C3%89LDORET",
        "search=%C3%A9t%C3%A9",
        "search=%C3%BFacht",
    ] {
        assert_eq!(
            get(&router, &format!("/properties/?{query}")).await.json()["count"],
            1,
            "{query}"
        );
    }
}

async fn head_is_answered_from_the_get_entry(env: TestEnv) {
    let app = env.app().await;
    let router = router(&app);
    let id = crate::support::create(&app, "Villa").await.id;
    let uncached = request(&router, "HEAD", "/properties/", &[], Default::default()).await;
    assert_eq!(
        (uncached.status.as_u16(), uncached.x_cache()),
        (200, "MISS")
    );
    let full = get(&router, "/properties/").await;
    let head = request(&router, "HEAD", "/properties/", &[], Default::default()).await;
    assert_eq!((head.status.as_u16(), head.x_cache()), (200, "HIT"));
    assert_eq!(head.header("etag"), full.header("etag"));
    assert_eq!(head.header("cache-control"), "no-cache");
    let queries = app.metrics.db_queries();
    assert_eq!(
        get(&router, "/properties/").await.body,
        full.body,
        "HEAD stored nothing of its own"
    );
    assert_eq!(app.metrics.db_queries(), queries);

    assert_eq!(
        get(&router, &format!("/properties/{id}/")).await.x_cache(),
        "MISS"
    );
    let padded = get(&router, &format!("/properties/00{id}/")).await;
    assert_eq!(
        (padded.status.as_u16(), padded.x_cache()),
        (200, "HIT"),
        "one entry per item, not per spelling"
    );
}
