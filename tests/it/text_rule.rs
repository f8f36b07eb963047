//! One text rule for filters (full case folding, NFC) gives both backends the same
//! answer for every spelling: Greek final sigma, Turkish dotted and dotless i, German ß,
//! composed and decomposed accents; and rows written by other programs get the rule's
//! keys from `listings migrate --rekey`, which the running servers see.

use axum::http::StatusCode;
use listings::service::migrations::{self, Rekey};
use serde_json::{Value, json};

use crate::both_modes;
use crate::support::{TestEnv, get, router, run_sql_elsewhere, write};

both_modes!(
    every_spelling_finds_the_same_listings,
    rekeying_gives_rows_from_elsewhere_the_rule
);

/// `location=…` → the titles found, and `search=…` → the titles found, the same on
/// both backends.
async fn every_spelling_finds_the_same_listings(env: TestEnv) {
    let app = env.app().await;
    let router = router(&app);
    for (title, location) in [
        ("Σπίτι στην ΟΔΟΣ", "ΟΔΟΣ"),
        ("Haus an der Straße", "Straße"),
        ("İzmir evi", "İzmir"),
        ("Kırıkkale evi", "Kırıkkale"),
        ("Cafe\u{301} house", "E\u{301}ldoret"),
        ("Plain", "Istanbul"),
    ] {
        let created = write(
            &router,
            "POST",
            "/properties/",
            json!({"title": title, "price": "10.00", "location": location}),
        )
        .await;
        assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    }
    let expectations: [(&str, &[&str]); 20] = [
        // Capital, small and final sigma are one letter.
        ("location=%CE%BF%CE%B4%CE%BF%CF%82", &["Σπίτι στην ΟΔΟΣ"]), // οδος
        ("location=%CE%BF%CE%B4%CE%BF%CF%83", &["Σπίτι στην ΟΔΟΣ"]), // οδοσ
        ("location=%CE%9F%CE%94%CE%9F%CE%A3", &["Σπίτι στην ΟΔΟΣ"]), // ΟΔΟΣ
        (
            "search=%CF%83%CF%80%CE%AF%CF%84%CE%B9",
            &["Σπίτι στην ΟΔΟΣ"],
        ), // σπίτι
        // ß is ss, in any case.
        ("location=STRASSE", &["Haus an der Straße"]),
        ("location=strasse", &["Haus an der Straße"]),
        ("location=stra%C3%9Fe", &["Haus an der Straße"]),
        ("search=STRASSE", &["Haus an der Straße"]),
        // İ keeps its dot as a mark; ı is not i (locale-free folding).
        ("location=%C4%B0ZMIR", &["İzmir evi"]),  // İZMIR
        ("location=i%CC%87zmir", &["İzmir evi"]), // i + combining dot
        ("location=izmir", &[]),
        ("location=K%C4%B1r%C4%B1kkale", &["Kırıkkale evi"]),
        ("location=KIRIKKALE", &[]),
        ("location=istanbul", &["Plain"]),
        ("location=%C4%B1stanbul", &[]), // ıstanbul
        // An accent as one character or as a letter and a combining mark.
        ("location=%C3%89ldoret", &["Cafe\u{301} house"]), // Éldoret
        ("location=e%CC%81ldoret", &["Cafe\u{301} house"]),
        ("search=caf%C3%A9", &["Cafe\u{301} house"]),
        ("search=CAFE%CC%81", &["Cafe\u{301} house"]),
        // A letter is not its accented form (keys are composed, not decomposed).
        ("search=cafe", &[]),
    ];
    for (query, titles) in expectations {
        let page = get(&router, &format!("/properties/?{query}")).await;
        assert_eq!(page.status, StatusCode::OK, "{query}: {:?}", page.body);
        assert_eq!(found(&page.json()), titles, "{query}");
    }
}

/// Rows inserted by another program get their database's `lower()` from the triggers
/// (`Straße` keeps its ß); `migrate --rekey` gives them the rule's keys, and the
/// servers retire the pages the new keys change. On PostgreSQL, a migration's pending
/// pass is finished by the next `migrate`.
async fn rekeying_gives_rows_from_elsewhere_the_rule(env: TestEnv) {
    let app = env.app().await;
    let router = router(&app);
    run_sql_elsewhere(
        &env,
        "INSERT INTO properties (title, description, price, location) \
         VALUES ('GROSSE Villa', 'Große Zimmer', 5, 'Straße')",
    )
    .await;
    app.notice_other_writers().await;
    let before = get(&router, "/properties/?location=strasse").await;
    assert_eq!(found(&before.json()), Vec::<String>::new());
    let url = env.database_url.parse().expect("database URL");
    let settings = env.settings().db;
    let migrated = migrations::migrate(&url, &settings, Rekey::All)
        .await
        .expect("rekey");
    assert_eq!(migrated.rekeyed, Some(1), "{migrated:?}");
    app.notice_other_writers().await;
    for query in ["location=strasse", "search=gro%C3%9Fe%20zimmer"] {
        let page = wait_for_titles(&router, query, &["GROSSE Villa"]).await;
        assert_eq!(found(&page), ["GROSSE Villa"], "{query}");
    }
    let again = migrations::migrate(&url, &settings, Rekey::All)
        .await
        .expect("rekey again");
    assert_eq!(again.rekeyed, Some(0), "nothing left to recompute");

    if env.is_postgres() {
        // Keys as the migration's lower() left them, and the pass it leaves pending.
        run_sql_elsewhere(
            &env,
            "UPDATE properties SET location_key = lower(location) WHERE title = 'GROSSE Villa'",
        )
        .await;
        app.notice_other_writers().await;
        assert_eq!(
            wait_for_titles(&router, "location=strasse", &[]).await["count"],
            0
        );
        run_sql_elsewhere(
            &env,
            "INSERT INTO text_keys_pending VALUES ('nfc-casefold')",
        )
        .await;
        let pending = migrations::migrate(&url, &settings, Rekey::IfPending)
            .await
            .expect("finish the pending pass");
        assert_eq!(pending.rekeyed, Some(1), "{pending:?}");
        let done = migrations::migrate(&url, &settings, Rekey::IfPending)
            .await
            .expect("migrate");
        assert_eq!(done.rekeyed, None, "the pass runs once");
        app.notice_other_writers().await;
        let page = wait_for_titles(&router, "location=strasse", &["GROSSE Villa"]).await;
        assert_eq!(found(&page), ["GROSSE Villa"]);
    }
}

fn found(page: &Value) -> Vec<String> {
    let mut titles: Vec<String> = page["data"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .filter_map(|row| row["title"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    titles.sort();
    titles
}

/// Polls a search (bounded: 2 s; PostgreSQL's notification may take a moment) until
/// it finds `titles`; returns the last page.
async fn wait_for_titles(
    router: &listings::http::HttpService,
    query: &str,
    titles: &[&str],
) -> Value {
    let mut page = Value::Null;
    for _ in 0..100 {
        page = get(router, &format!("/properties/?{query}")).await.json();
        if found(&page) == titles {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    page
}
