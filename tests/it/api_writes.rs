//! Writing over HTTP: create, replace, update, delete, each invalidating both levels;
//! the token guard; and every way a body can be wrong, with nothing written.

use std::time::Duration;

use axum::body::Body;
use listings::domain::PropertyQuery;
use listings::metrics::WritePhase;
use listings::service::properties;
use listings::test_hooks::Point;
use serde_json::json;

use crate::both_modes;
use crate::support::{ADMIN_TOKEN, TestEnv, get, request, router, write};

both_modes!(
    a_write_does_not_wait_for_a_read_connection,
    writes_invalidate_lists_and_items,
    the_write_api_needs_the_token,
    bad_bodies_write_nothing
);

async fn writes_invalidate_lists_and_items(env: TestEnv) {
    let app = env.app().await;
    let router = router(&app);
    assert_eq!(get(&router, "/properties/").await.json()["count"], 0);

    let body = json!({"title": "Beach villa", "description": "Sea view", "price": 500000, "location": "Malindi"});
    let created = write(&router, "POST", "/properties/", body).await;
    assert_eq!(created.status, 201);
    let id = created.json()["id"].as_i64().expect("id");
    let item = format!("/properties/{id}/");
    assert_eq!(created.header("location"), item);
    assert_eq!(created.json()["price"], "500000.00");

    let list = get(&router, "/properties/").await;
    assert_eq!(
        (list.x_cache(), list.titles()),
        ("MISS", vec!["Beach villa".to_owned()])
    );
    assert_eq!(get(&router, &item).await.x_cache(), "MISS");
    assert_eq!(get(&router, &item).await.x_cache(), "HIT");

    let replaced = write(
        &router,
        "PUT",
        &item,
        json!({"title": "Villa", "price": "450000.5", "location": "Lamu"}),
    )
    .await;
    assert_eq!(replaced.status, 200);
    assert_eq!(replaced.json()["description"], "", "PUT sets every field");
    let after_put = get(&router, &item).await;
    assert_eq!(
        (after_put.x_cache(), after_put.json()["price"].as_str()),
        ("MISS", Some("450000.50"))
    );
    assert_eq!(
        get(&router, "/properties/?location=lamu").await.titles(),
        ["Villa"]
    );

    let patched = write(&router, "PATCH", &item, json!({"description": "Renovated"})).await;
    assert_eq!(patched.status, 200);
    assert_eq!(
        (
            patched.json()["title"].as_str(),
            patched.json()["description"].as_str()
        ),
        (Some("Villa"), Some("Renovated"))
    );
    assert_eq!(get(&router, &item).await.json()["description"], "Renovated");
    assert_eq!(
        get(&router, "/properties/?search=renovated").await.json()["count"],
        1
    );

    let deleted = write(&router, "DELETE", &item, json!(null)).await;
    assert_eq!(deleted.status, 204);
    assert!(deleted.body.is_empty());
    assert_eq!(get(&router, &item).await.status, 404);
    assert_eq!(get(&router, "/properties/").await.json()["count"], 0);
    for method in ["PUT", "PATCH", "DELETE"] {
        let missing = write(
            &router,
            method,
            &item,
            json!({"title": "x", "price": 1, "location": "y"}),
        )
        .await;
        assert_eq!(missing.status, 404, "{method} of a deleted property");
    }
}

async fn the_write_api_needs_the_token(env: TestEnv) {
    let app = env.app().await;
    let router = router(&app);
    let body = || Body::from(json!({"title": "T", "price": 1, "location": "L"}).to_string());
    let json_type = ("content-type", "application/json");
    let missing = request(&router, "POST", "/properties/", &[json_type], body()).await;
    assert_eq!(missing.status, 401);
    assert_eq!(missing.header("www-authenticate"), "Bearer");
    let wrong = format!("Bearer {ADMIN_TOKEN}x");
    let wrong = request(
        &router,
        "POST",
        "/properties/",
        &[json_type, ("authorization", &wrong)],
        body(),
    )
    .await;
    assert_eq!(wrong.status, 401);
    assert_eq!(
        request(&router, "DELETE", "/properties/1/", &[], Body::empty())
            .await
            .status,
        401
    );

    let mut settings = env.settings();
    settings.admin_token = None;
    let read_only = crate::support::router(&env.app_with(settings).await);
    let off = write(
        &read_only,
        "POST",
        "/properties/",
        json!({"title": "T", "price": 1, "location": "L"}),
    )
    .await;
    assert_eq!(off.status, 403);
    assert!(
        off.json()["error"]
            .as_str()
            .expect("error")
            .contains("LISTINGS_ADMIN_TOKEN"),
        "says how to turn it on"
    );
    assert_eq!(
        get(&read_only, "/properties/").await.status,
        200,
        "reads stay public"
    );
    assert_eq!(
        get(&router, "/properties/").await.json()["count"],
        0,
        "nothing was written"
    );
    let lower_case_scheme = format!("bearer {ADMIN_TOKEN}");
    let accepted = request(
        &router,
        "POST",
        "/properties/",
        &[json_type, ("authorization", &lower_case_scheme)],
        body(),
    )
    .await;
    assert_eq!(accepted.status, 201, "the scheme name is case-insensitive");
}

async fn bad_bodies_write_nothing(env: TestEnv) {
    let app = env.app().await;
    let router = router(&app);
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let headers = |content_type: &'static str| {
        [
            ("authorization", auth.clone()),
            ("content-type", content_type.to_owned()),
        ]
    };
    let send = |content_type: &'static str, body: String| {
        let router = router.clone();
        let headers = headers(content_type);
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            request(&router, "POST", "/properties/", &headers, Body::from(body)).await
        }
    };

    let invalid = send(
        "application/json",
        json!({"title": "", "price": "-1", "location": "x".repeat(101)}).to_string(),
    )
    .await;
    assert_eq!(invalid.status, 422);
    let fields = &invalid.json()["fields"];
    assert_eq!(fields["title"], "must not be empty");
    assert_eq!(fields["price"], "must not be negative");
    assert_eq!(fields["location"], "must be at most 100 characters");

    let cases = [
        (
            "application/json",
            "{\"title\": ".to_owned(),
            400,
            "malformed JSON",
        ),
        ("application/json", "[1, 2]".to_owned(), 400, "JSON object"),
        (
            "text/plain",
            json!({"title": "T", "price": 1, "location": "L"}).to_string(),
            415,
            "application/json",
        ),
        (
            "application/json",
            json!({"title": 5, "price": 1, "location": "L"}).to_string(),
            422,
            "title: must be a string",
        ),
        (
            "application/json",
            json!({"title": "T", "price": 1, "location": "L", "rooms": 3}).to_string(),
            422,
            "unknown field",
        ),
        (
            "application/json",
            json!({"price": "1.005", "location": "L"}).to_string(),
            422,
            "title: is required",
        ),
        (
            "application/json",
            format!("{{\"title\": \"{}\"}}", "x".repeat(70 * 1024)),
            413,
            "64 KiB",
        ),
    ];
    for (content_type, body, status, message) in cases {
        let response = send(content_type, body).await;
        assert_eq!(response.status, status, "{message}");
        let error = response.json()["error"].as_str().expect("error").to_owned();
        assert!(error.contains(message), "{status}: {error}");
    }
    let patch = write(&router, "PATCH", "/properties/1/", json!({})).await;
    assert!(patch.status == 404 || patch.status == 422);
    assert_eq!(
        get(&router, "/properties/").await.json()["count"],
        0,
        "nothing was written"
    );
}

/// Writes have connections of their own: with the only read connection held by a read
/// (paused inside its snapshot), a read waits out the pool timeout, but a write commits
/// at once, and the metrics time each of its phases. (SQLite always had a write
/// connection; on PostgreSQL writes took the readers' pool, and this write was a 503.)
async fn a_write_does_not_wait_for_a_read_connection(env: TestEnv) {
    let mut settings = env.settings();
    settings.db.max_connections = 1;
    // Long enough to open a connection on a loaded machine; a read waits it out.
    settings.db.pool_timeout = Duration::from_secs(1);
    let app = env.app_with(settings).await;
    let router = router(&app);
    let body = json!({"title": "Loft", "price": "1000.00", "location": "Mombasa"});
    assert_eq!(
        write(&router, "POST", "/properties/", body.clone())
            .await
            .status,
        201
    );

    let held = app.hooks().arm(Point::BetweenRowsAndCount);
    let reader = tokio::spawn({
        let app = app.clone();
        async move {
            let text_search = PropertyQuery::from_query_string("search=loft").expect("a search");
            properties::list_properties(&app, &text_search)
                .await
                .map(|(page, _)| page.page.count)
        }
    });
    held.reached().await;
    let waited = get(&router, "/properties/?location=Mombasa").await;
    assert_eq!(waited.status, 503, "no read connection: {:?}", waited.body);

    let phases = |phase| app.metrics.write_phase(phase).count();
    let before = WritePhase::ALL.map(phases);
    let created = write(&router, "POST", "/properties/", body).await;
    assert_eq!(
        created.status, 201,
        "the write needs no read connection: {:?}",
        created.body
    );
    let after = WritePhase::ALL.map(phases);
    for (i, phase) in WritePhase::ALL.iter().enumerate() {
        assert_eq!(after[i], before[i] + 1, "one {phase:?} timed");
    }

    held.release();
    let counted = reader.await.expect("the reader").expect("the text search");
    assert_eq!(
        counted, 1,
        "the held read's snapshot was taken before the write"
    );
    let page = get(&router, "/properties/?location=Mombasa").await;
    assert_eq!(page.json()["count"], 2, "{:?}", page.body);
}
