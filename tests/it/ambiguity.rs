//! Ambiguous input is an input error, and field lines combine (RFC 9110 §5.3): a
//! miscased or unknown query parameter, a parameter given twice and two Authorization
//! lines are refused by name; several Accept-Encoding or If-None-Match lines count as
//! one list, whose `q` is read in any case; If-None-Match is read as a list of
//! entity-tags, whose quotes may hold commas. Raw TCP against the real binary.

use crate::both_modes;
use crate::support::TestEnv;
use crate::support::raw_http::request;

both_modes!(
    ambiguous_requests_are_refused_by_name,
    field_lines_combine_and_weights_are_read_in_any_case
);

async fn ambiguous_requests_are_refused_by_name(env: TestEnv) {
    let server = env.serve_writable(&[]);
    for (path, named) in [
        ("/properties/?Location=thika", "`Location`"),
        ("/properties/?colour=red", "`colour`"),
        ("/properties/?page=1&page=2", "page: given more than once"),
    ] {
        let answer = request(server.address, "GET", path, &[], "");
        assert_eq!(answer.status, 400, "{path}: {}", answer.body);
        let error = answer.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(error.contains(named), "{path}: {error}");
    }
    let decorated = request(
        server.address,
        "GET",
        "/properties/?utm_source=mail",
        &[],
        "",
    );
    assert_eq!(decorated.status, 200, "tracking parameters are ignored");

    // Two Authorization lines: one valid, one not. Which would a proxy have checked?
    let body = r#"{"title":"Twice","price":"1.00","location":"Lamu"}"#;
    let twice = request(
        server.address,
        "POST",
        "/properties/",
        &["Authorization: Bearer not-the-token"],
        body,
    );
    assert_eq!(twice.status, 400, "{}", twice.body);
    assert!(twice.body.contains("Authorization"), "{}", twice.body);
    let listed = request(server.address, "GET", "/properties/", &[], "");
    assert_eq!(listed.json()["count"], 0, "nothing was written");
}

async fn field_lines_combine_and_weights_are_read_in_any_case(env: TestEnv) {
    let server = env.serve_writable(&[]);
    // A page large enough to have a gzip variant.
    let description = "A long description of a house by the sea. ".repeat(40);
    for i in 0..20 {
        let body = format!(
            r#"{{"title":"House {i}","description":"{description}","price":"1.00","location":"Lamu"}}"#
        );
        assert_eq!(
            request(server.address, "POST", "/properties/", &[], &body).status,
            201
        );
    }
    let encoding = |extra: &[&str]| {
        let answer = request(server.address, "GET", "/properties/", extra, "");
        assert_eq!(answer.status, 200);
        answer.header("content-encoding")
    };
    assert_eq!(
        encoding(&["Accept-Encoding: gzip"]).as_deref(),
        Some("gzip")
    );
    assert_eq!(encoding(&["Accept-Encoding: gzip;Q=0"]), None, "Q is q");
    assert_eq!(
        encoding(&["Accept-Encoding: identity", "Accept-Encoding: gzip"]).as_deref(),
        Some("gzip"),
        "the second line counts too"
    );

    let etag = request(server.address, "GET", "/properties/", &[], "")
        .header("etag")
        .expect("ETag");
    let revalidated = request(
        server.address,
        "GET",
        "/properties/",
        &[
            "If-None-Match: \"stale\"",
            &format!("If-None-Match: {etag}"),
        ],
        "",
    );
    assert_eq!(
        revalidated.status, 304,
        "the second If-None-Match line counts too"
    );
}

both_modes!(if_none_match_is_a_list_of_entity_tags);

async fn if_none_match_is_a_list_of_entity_tags(env: TestEnv) {
    let server = env.serve_writable(&[]);
    let body = r#"{"title":"Tagged","price":"1.00","location":"Lamu"}"#;
    let created = request(server.address, "POST", "/properties/", &[], body);
    let path = format!("/properties/{}/", created.json()["id"]);
    let etag = request(server.address, "GET", &path, &[], "")
        .header("etag")
        .expect("ETag");
    let opaque = etag.trim_matches('"');
    let status = |if_none_match: String| {
        let line = format!("If-None-Match: {if_none_match}");
        let answer = request(server.address, "GET", &path, &[&line], "");
        (answer.status, answer.body.is_empty())
    };
    assert_eq!(
        status(format!(r#""x,y", {etag}"#)),
        (304, true),
        "a comma inside a tag does not end it"
    );
    assert_eq!(status(format!(r#"W/"a,b",W/{etag}"#)), (304, true));
    // The current tag's text inside another tag, after its comma: no match.
    assert_eq!(status(format!(r#""x,{opaque}""#)), (200, false));
    // Malformed (a quote left open), so ignored, though split at every comma it would
    // end with the current tag.
    assert_eq!(status(format!(r#""x,{etag}"#)), (200, false));
}

both_modes!(every_spelling_of_an_item_path_is_one_view);

async fn every_spelling_of_an_item_path_is_one_view(env: TestEnv) {
    let server = env.serve_writable(&[]);
    let body = r#"{"title":"Encoded","price":"1.00","location":"Lamu"}"#;
    let created = request(server.address, "POST", "/properties/", &[], body);
    let id = created.json()["id"].as_i64().expect("id");
    let plain = request(
        server.address,
        "GET",
        &format!("/properties/{id}/"),
        &[],
        "",
    );
    let encoded_id: String = id
        .to_string()
        .bytes()
        .map(|b| format!("%{b:02X}"))
        .collect();
    let encoded = request(
        server.address,
        "GET",
        &format!("/properties/{encoded_id}/"),
        &[],
        "",
    );
    assert_eq!(encoded.status, 200, "{}", encoded.body);
    for name in ["etag", "cache-control", "vary"] {
        assert_eq!(encoded.header(name), plain.header(name), "{name}");
    }
    assert_eq!(
        encoded.header("x-cache").as_deref(),
        Some("HIT"),
        "the same view entry"
    );
    // A HEAD that misses the cache carries what the GET does.
    let body = r#"{"title":"Headed","price":"2.00","location":"Lamu"}"#;
    let created = request(server.address, "POST", "/properties/", &[], body);
    let item = format!("/properties/{}/", created.json()["id"]);
    let head = request(server.address, "HEAD", &item, &[], "");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty(), "no body: {}", head.body);
    let get = request(server.address, "GET", &item, &[], "");
    assert_eq!(
        get.header("x-cache").as_deref(),
        Some("HIT"),
        "the HEAD filled the view"
    );
    for name in ["etag", "vary", "cache-control", "content-type"] {
        assert!(head.header(name).is_some(), "{name}");
        assert_eq!(head.header(name), get.header(name), "{name}");
    }
    let not_utf8 = request(server.address, "GET", "/properties/%FF/", &[], "");
    assert_eq!(not_utf8.status, 404);
    assert!(not_utf8.json()["error"].is_string(), "{}", not_utf8.body);
}
