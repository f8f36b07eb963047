//! Conditional writes (RFC 9110 §13.1.1–2) against the real binary, over raw TCP so
//! that the header lines are exactly as written: a write whose `If-Match` is stale, or
//! whose `If-None-Match` matches, is refused with 412 and writes nothing; two editors
//! holding the same ETag cannot both succeed.

use crate::both_modes;
use crate::support::TestEnv;
use crate::support::binary::Server;
use crate::support::raw_http::{Answer, request};

both_modes!(
    a_stale_etag_writes_nothing,
    two_editors_with_one_etag_cannot_both_win
);

fn create(server: &Server, title: &str) -> (String, String) {
    let body = format!(r#"{{"title":"{title}","price":"100.00","location":"Lamu"}}"#);
    let created = request(server.address, "POST", "/properties/", &[], &body);
    assert_eq!(created.status, 201, "{}", created.body);
    let item = format!("/properties/{}/", created.json()["id"]);
    let etag = created
        .header("etag")
        .expect("a created listing carries its ETag");
    (item, etag)
}

async fn a_stale_etag_writes_nothing(env: TestEnv) {
    let server = env.serve_writable(&[]);
    let (item, created_etag) = create(&server, "Harbour view");
    let read = request(server.address, "GET", &item, &[], "");
    let etag = read.header("etag").expect("ETag");
    assert_eq!(
        etag, created_etag,
        "the write's ETag is the one a GET gives"
    );

    let patched = request(
        server.address,
        "PATCH",
        &item,
        &[&format!("If-Match: {etag}")],
        r#"{"title":"Harbour view, renovated"}"#,
    );
    assert_eq!(patched.status, 200, "{}", patched.body);
    let new_etag = patched.header("etag").expect("the new ETag");
    assert_ne!(new_etag, etag);
    assert_eq!(
        request(server.address, "GET", &item, &[], "").header("etag"),
        Some(new_etag.clone())
    );

    // The other editor still holds the first ETag: refused, and nothing changes.
    for (method, body) in [
        ("PATCH", r#"{"title":"Overwritten"}"#),
        (
            "PUT",
            r#"{"title":"Overwritten","price":"1.00","location":"Lamu"}"#,
        ),
        ("DELETE", ""),
    ] {
        let stale = request(
            server.address,
            method,
            &item,
            &[&format!("If-Match: {etag}")],
            body,
        );
        assert_eq!(stale.status, 412, "{method}: {}", stale.body);
        assert!(
            stale.json()["error"]
                .as_str()
                .is_some_and(|e| e.contains("ETag")),
            "{}",
            stale.body
        );
    }
    let unchanged = request(server.address, "GET", &item, &[], "");
    assert_eq!(unchanged.status, 200);
    assert_eq!(unchanged.json()["title"], "Harbour view, renovated");

    // If-None-Match: * means "only if it does not exist"; a weak match counts too.
    let none = request(
        server.address,
        "PUT",
        &item,
        &["If-None-Match: *"],
        r#"{"title":"Created?","price":"1.00","location":"Lamu"}"#,
    );
    assert_eq!(none.status, 412, "{}", none.body);
    let weak = request(
        server.address,
        "DELETE",
        &item,
        &[&format!("If-None-Match: W/{new_etag}")],
        "",
    );
    assert_eq!(weak.status, 412, "{}", weak.body);
    // A weak tag never satisfies If-Match (strong comparison).
    let weak = request(
        server.address,
        "PATCH",
        &item,
        &[&format!("If-Match: W/{new_etag}")],
        r#"{"title":"Weak"}"#,
    );
    assert_eq!(weak.status, 412, "{}", weak.body);

    // Field lines combine into one list (RFC 9110 §5.3).
    let combined = request(
        server.address,
        "PATCH",
        &item,
        &[
            "If-Match: \"someone-else\"",
            &format!("If-Match: {new_etag}"),
        ],
        r#"{"description":"Sea view"}"#,
    );
    assert_eq!(combined.status, 200, "{}", combined.body);

    let malformed = request(
        server.address,
        "PATCH",
        &item,
        &["If-Match: stale-etag"],
        r#"{"title":"Malformed"}"#,
    );
    assert_eq!(malformed.status, 400, "{}", malformed.body);
    assert!(
        malformed.json()["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("If-Match: ")),
        "{}",
        malformed.body
    );

    // A precondition on a listing that does not exist changes nothing: 404.
    let missing = request(
        server.address,
        "DELETE",
        "/properties/999999/",
        &["If-Match: *"],
        "",
    );
    assert_eq!(missing.status, 404);
    let deleted = request(server.address, "DELETE", &item, &["If-Match: *"], "");
    assert_eq!(deleted.status, 204, "{}", deleted.body);
}

async fn two_editors_with_one_etag_cannot_both_win(env: TestEnv) {
    let server = env.serve_writable(&[]);
    let (item, mut etag) = create(&server, "Contested");
    for round in 0..10 {
        let editors: Vec<_> = (0..2)
            .map(|editor| {
                let (address, item, etag) = (server.address, item.clone(), etag.clone());
                std::thread::spawn(move || {
                    let body = format!(r#"{{"title":"Round {round}, editor {editor}"}}"#);
                    request(
                        address,
                        "PATCH",
                        &item,
                        &[&format!("If-Match: {etag}")],
                        &body,
                    )
                })
            })
            .collect();
        let answers: Vec<Answer> = editors
            .into_iter()
            .map(|editor| editor.join().expect("editor"))
            .collect();
        let mut statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
        statuses.sort_unstable();
        assert_eq!(
            statuses,
            [200, 412],
            "round {round}: exactly one editor wins"
        );
        let winner = answers.iter().find(|a| a.status == 200).expect("a winner");
        let read = request(server.address, "GET", &item, &[], "");
        assert_eq!(
            read.json()["title"],
            winner.json()["title"],
            "round {round}"
        );
        etag = read.header("etag").expect("ETag");
        assert_eq!(Some(etag.clone()), winner.header("etag"));
    }
}
