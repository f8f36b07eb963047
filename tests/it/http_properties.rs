//! `GET /properties/` served in-process: the body, its order, and the error routes.

use crate::both_modes;
use crate::support::{TestEnv, create, get, router, send};

both_modes!(
    list_is_newest_first_with_exact_fields,
    errors_are_json,
    path_without_slash_is_served
);

async fn list_is_newest_first_with_exact_fields(env: TestEnv) {
    let app = env.app().await;
    let router = router(&app);
    let empty = get(&router, "/properties/").await;
    assert_eq!(empty.status, 200);
    assert_eq!(empty.headers["content-type"], "application/json");
    assert_eq!(
        empty.json(),
        serde_json::json!({ "count": 0, "next": null, "previous": null, "data": [] })
    );

    let first = create(&app, "First").await;
    let second = listings::service::properties::create_property(
        &app,
        &crate::support::new_property("Second", "19.99", "Nairobi"),
    )
    .await
    .expect("create");
    let third = create(&app, "Third").await;

    let list = get(&router, "/properties/").await;
    assert_eq!(
        list.titles(),
        ["Third", "Second", "First"],
        "newest first, ties broken by id"
    );
    let item = &list.json()["data"][1];
    assert_eq!(item["id"], second.id);
    assert_eq!(item["price"], "19.99", "exact decimal with two places");
    assert_eq!(item["location"], "Nairobi");
    assert_eq!(item["description"], "A test listing");
    let created_at = item["created_at"].as_str().expect("created_at");
    assert!(
        created_at.len() == "2026-11-26T10:00:00.123456Z".len() && created_at.ends_with('Z'),
        "RFC 3339 UTC with microseconds: {created_at}"
    );
    assert!(first.id < second.id && second.id < third.id);
}

async fn errors_are_json(env: TestEnv) {
    let app = env.app().await;
    let router = router(&app);
    let missing = get(&router, "/nowhere").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json(), serde_json::json!({ "error": "not found" }));
    let wrong_method = send(&router, "DELETE", "/properties/").await;
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.json()["error"], "method not allowed");
    assert_eq!(
        wrong_method.x_cache(),
        "",
        "non-GET requests bypass the view cache"
    );
}

async fn path_without_slash_is_served(env: TestEnv) {
    let app = env.app().await;
    let router = router(&app);
    create(&app, "Only").await;
    let response = get(&router, "/properties").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.titles(), ["Only"]);
}
