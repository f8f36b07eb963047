//! `/openapi.json` documents exactly what is served: every documented operation
//! answers (not 404 for the route, not 405), and every route and method the router
//! serves is documented, with the statuses the server answers before any route.

use std::collections::BTreeSet;

use axum::body::Body;
use serde_json::Value;

use crate::support::{ADMIN_TOKEN, TestEnv, create, get, request, router};

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_matches_the_routes_served() {
    let env = TestEnv::embedded();
    let app = env.app().await;
    let router = router(&app);
    let id = create(&app, "Villa").await.id.to_string();

    let response = get(&router, "/openapi.json").await;
    assert_eq!(response.status, 200);
    let doc = response.json();
    assert!(doc["openapi"].as_str().expect("version").starts_with("3."));
    let paths = doc["paths"].as_object().expect("paths");

    let concrete = |path: &str| path.replace("{id}", &id);
    let mut documented = BTreeSet::new();
    for (path, item) in paths {
        for method in METHODS {
            let Some(operation) = item.get(method.to_lowercase()) else {
                continue;
            };
            documented.insert((path.clone(), method));
            let responses: Vec<&String> = operation["responses"]
                .as_object()
                .expect("responses")
                .keys()
                .collect();
            // What the server answers before any route: a head too slow, a transfer
            // coding or method it does not implement.
            for status in ["408", "501"] {
                assert!(
                    responses.contains(&&status.to_owned()),
                    "{method} {path} does not document {status}: {responses:?}"
                );
            }
            let auth = format!("Bearer {ADMIN_TOKEN}");
            let headers = [
                ("authorization", auth.as_str()),
                ("content-type", "application/json"),
            ];
            let body = if method == "GET" || method == "DELETE" {
                Body::empty()
            } else {
                Body::from(r#"{"title": "T", "price": "1.00", "location": "L"}"#)
            };
            let answer = request(&router, method, &concrete(path), &headers, body).await;
            let status = answer.status.as_str().to_owned();
            assert!(
                responses.contains(&&status),
                "{method} {path} answered {status}, documented {responses:?}"
            );
            assert_ne!(
                answer.status, 405,
                "{method} {path} is documented but not served"
            );
        }
    }

    // The router's own table of paths (axum lists them in its Debug output).
    let debug = format!("{router:?}");
    let table = debug
        .split("fallback_router")
        .next()
        .expect("path router part");
    let served_paths: BTreeSet<String> = table
        .split("RouteId(")
        .skip(1)
        .filter_map(|part| part.split('"').nth(1).map(str::to_owned))
        .filter(|path| path.starts_with('/'))
        .collect();
    assert!(served_paths.len() >= 5, "{table}");
    for path in &served_paths {
        assert!(
            paths.contains_key(path),
            "{path} is served but not documented"
        );
        for method in METHODS {
            let answer = request(&router, method, &concrete(path), &[], Body::empty()).await;
            if answer.status != 405 {
                assert!(
                    documented.contains(&(path.clone(), method)),
                    "{method} {path} is served but not documented"
                );
            }
        }
    }
    let documented_paths: BTreeSet<String> = paths.keys().cloned().collect();
    assert_eq!(documented_paths, served_paths);
    assert!(doc["components"]["schemas"]["Property"].is_object());
    assert!(matches!(
        doc["components"]["securitySchemes"]["bearer"],
        Value::Object(_)
    ));
}
