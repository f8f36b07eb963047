//! The admin commands beyond create-property, as operators run them: list, update,
//! delete, import, seed and completions, with their errors.

use std::fmt::Write as _;

use crate::both_modes;
use crate::support::TestEnv;
use crate::support::binary::{stderr, stdout};

both_modes!(
    an_import_whose_reader_fails_midway_leaves_nothing,
    list_update_delete,
    import_is_all_or_nothing,
    seed_adds_realistic_listings
);

fn json_out(output: &std::process::Output) -> serde_json::Value {
    assert!(output.status.success(), "{}", stderr(output));
    serde_json::from_str(&stdout(output))
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(output)))
}

fn migrate(env: &TestEnv) {
    let output = env.run(&["migrate"]);
    assert!(output.status.success(), "{}", stderr(&output));
}

async fn list_update_delete(env: TestEnv) {
    migrate(&env);
    for (title, price, location) in [
        ("Sea villa", "900000", "Malindi"),
        ("Town flat", "120000.5", "Nairobi"),
    ] {
        let created = env.create_via_cli(title, price, location);
        assert!(created.status.success(), "{}", stderr(&created));
    }
    let table = stdout(&env.run(&["list-properties", "--ordering", "price"]));
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("TITLE") && lines[0].contains("PRICE"),
        "{table}"
    );
    assert!(
        lines[1].contains("Town flat") && lines[1].contains("120000.50"),
        "{table}"
    );
    assert!(lines[2].contains("Sea villa"), "{table}");
    assert!(table.contains("1-2 of 2"), "{table}");

    let listed = json_out(&env.run(&["list-properties", "--location", "malindi", "--json"]));
    assert_eq!(listed["count"], 1);
    let id = listed["data"][0]["id"].as_i64().expect("id").to_string();

    let bad_filter = env.run(&["list-properties", "--page-size", "5000"]);
    assert!(!bad_filter.status.success());
    assert!(
        stderr(&bad_filter).contains("--page-size: must be a whole number from 1 to 1000"),
        "{}",
        stderr(&bad_filter)
    );

    let updated = json_out(&env.run(&[
        "update-property",
        &id,
        "--price",
        "850000",
        "--title",
        "Sea view villa",
    ]));
    assert_eq!(
        (updated["price"].as_str(), updated["title"].as_str()),
        (Some("850000.00"), Some("Sea view villa"))
    );
    let invalid = env.run(&["update-property", &id, "--price", "-1"]);
    assert!(!invalid.status.success() && stderr(&invalid).contains("price: must not be negative"));
    let nothing = env.run(&["update-property", &id]);
    assert!(
        !nothing.status.success() && stderr(&nothing).contains("at least one of"),
        "{}",
        stderr(&nothing)
    );
    let missing = env.run(&["update-property", "999999", "--title", "x"]);
    assert!(!missing.status.success() && stderr(&missing).contains("property 999999 not found"));

    let deleted = env.run(&["delete-property", &id]);
    assert!(
        deleted.status.success() && stdout(&deleted).contains(&format!("Deleted property {id}"))
    );
    let again = env.run(&["delete-property", &id]);
    assert!(!again.status.success() && stderr(&again).contains("not found"));
    assert_eq!(
        json_out(&env.run(&["list-properties", "--json"]))["count"],
        1
    );
}

async fn import_is_all_or_nothing(env: TestEnv) {
    migrate(&env);
    let dir = env.dir.path();
    let bad = dir.join("bad.csv");
    std::fs::write(&bad, "title,price,location,description\nGood,1,Lamu,ok\n,2,Lamu,\nAlso bad,-3,,x\nFine,4,Lamu,\n")
        .expect("write");
    let output = env.run(&["import", bad.to_str().expect("path")]);
    assert!(!output.status.success());
    let report = stderr(&output);
    assert!(
        report.contains("line 3: title: must not be empty"),
        "{report}"
    );
    assert!(
        report.contains("line 4: price: must not be negative; location: must not be empty"),
        "{report}"
    );
    assert!(
        report.contains("2 of 4 rows are invalid; nothing was imported"),
        "{report}"
    );
    assert_eq!(
        json_out(&env.run(&["list-properties", "--json"]))["count"],
        0
    );

    // Enough rows for several batches.
    let mut csv = String::from("location,title,price,description\n");
    for i in 0..2500 {
        let _ = writeln!(csv, "Lamu,\"House {i}, with a comma\",{i}.50,\"line one\"");
    }
    let good = dir.join("good.csv");
    std::fs::write(&good, csv).expect("write");
    let imported = env.run(&[
        "import",
        good.to_str().expect("path"),
        "--batch-size",
        "1000",
    ]);
    assert!(imported.status.success(), "{}", stderr(&imported));
    assert!(
        stdout(&imported).contains("Imported 2500 properties"),
        "{}",
        stdout(&imported)
    );
    assert!(
        stderr(&imported).contains("importing: 2500/2500 rows"),
        "plain progress off a terminal"
    );
    assert_eq!(
        stderr(&imported).matches("cache invalidated").count(),
        1,
        "one invalidation for the import"
    );

    let lines = dir.join("more.data");
    std::fs::write(&lines, "{\"title\": \"J\", \"price\": 3, \"location\": \"Kilifi\"}\n\n{\"title\": \"K\", \"price\": \"4.10\", \"location\": \"Kilifi\"}\n")
        .expect("write");
    let unknown = env.run(&["import", lines.to_str().expect("path")]);
    assert!(
        !unknown.status.success() && stderr(&unknown).contains("--format"),
        "{}",
        stderr(&unknown)
    );
    let jsonl = env.run(&["import", lines.to_str().expect("path"), "--format", "jsonl"]);
    assert!(jsonl.status.success(), "{}", stderr(&jsonl));
    let kilifi = json_out(&env.run(&[
        "list-properties",
        "--location",
        "kilifi",
        "--ordering",
        "price",
        "--json",
    ]));
    assert_eq!(kilifi["count"], 2);
    assert_eq!(kilifi["data"][1]["price"], "4.10");

    let broken = dir.join("broken.jsonl");
    std::fs::write(
        &broken,
        "{\"title\": \"A\", \"price\": 1, \"location\": \"L\"}\n{not json}\n",
    )
    .expect("write");
    let output = env.run(&["import", broken.to_str().expect("path")]);
    assert!(
        !output.status.success() && stderr(&output).contains("line 2: malformed JSON"),
        "{}",
        stderr(&output)
    );
    assert_eq!(
        json_out(&env.run(&["list-properties", "--json", "--page-size", "1"]))["count"],
        2502
    );
}

async fn seed_adds_realistic_listings(env: TestEnv) {
    migrate(&env);
    let seeded = env.run(&["seed", "--count", "1500", "--seed", "7"]);
    assert!(seeded.status.success(), "{}", stderr(&seeded));
    assert!(stdout(&seeded).contains("Added 1500 generated properties"));
    let page = json_out(&env.run(&["list-properties", "--json", "--page-size", "5"]));
    assert_eq!(page["count"], 1500);
    let first = &page["data"][0];
    assert!(
        first["title"].as_str().expect("title").contains(" in "),
        "{first}"
    );
    assert!(
        !first["description"]
            .as_str()
            .expect("description")
            .is_empty()
    );
    assert!(!env.run(&["seed", "--count", "0"]).status.success());
}

#[test]
fn completions_for_each_shell() {
    let env = TestEnv::embedded();
    for shell in ["bash", "zsh", "fish"] {
        let output = env.run(&["completions", shell]);
        assert!(output.status.success(), "{shell}");
        let script = stdout(&output);
        assert!(
            script.contains("listings") && script.contains("import"),
            "{shell}"
        );
    }
    assert!(!env.run(&["completions", "tcsh"]).status.success());
}

/// The rows are read beside the write (on SQLite the write runs in a task of its own and
/// hears each batch through a channel): a reader that fails after a batch was inserted
/// must roll the whole import back, and its error is the one reported.
async fn an_import_whose_reader_fails_midway_leaves_nothing(env: TestEnv) {
    use listings::domain::{NewProperty, PropertyInput};
    use listings::service::properties::import_properties;

    let app = env.app().await;
    let row = |i: usize| {
        NewProperty::parse(PropertyInput {
            title: Some(&format!("House {i}")),
            description: None,
            price: Some("10.00"),
            location: Some("Lamu"),
        })
        .expect("a valid row")
    };
    let mut batches = 0;
    let mut heard = Vec::new();
    let imported = import_properties(
        &app,
        || {
            batches += 1;
            match batches {
                1 | 2 => Ok(Some((0..50).map(row).collect())),
                _ => anyhow::bail!("the file changed while importing"),
            }
        },
        |total| heard.push(total),
    )
    .await;
    let error = imported.expect_err("the reader failed");
    assert!(error.to_string().contains("the file changed"), "{error:#}");
    assert_eq!(
        heard,
        [50, 100],
        "both batches were inserted before the failure"
    );
    let page = crate::support::get(&crate::support::router(&app), "/properties/").await;
    assert_eq!(page.json()["count"], 0, "rolled back: {:?}", page.body);
}

/// A bulk load leaves PostgreSQL ready for cheap counts: `import` vacuums and analyzes
/// the table before it exits, so that counts and filtered pages are index-only scans at
/// once instead of after autovacuum's next round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(listings_test_services), ignore = "needs PostgreSQL and Redis")]
async fn an_import_on_postgres_leaves_the_table_vacuumed_and_analyzed() {
    use diesel::sql_types::Bool;
    use diesel_async::{AsyncConnection as _, AsyncPgConnection, RunQueryDsl as _};

    let env = TestEnv::postgres_redis().await;
    migrate(&env);
    let mut csv = String::from("title,price,location\n");
    for i in 0..200 {
        let _ = writeln!(csv, "House {i},{i}00.00,Lamu");
    }
    let file = env.dir.path().join("rows.csv");
    std::fs::write(&file, csv).expect("write");
    let imported = env.run(&["import", file.to_str().expect("path")]);
    assert!(imported.status.success(), "{}", stderr(&imported));
    assert!(
        stderr(&imported).contains("vacuumed and analyzed properties"),
        "{}",
        stderr(&imported)
    );
    let mut conn = AsyncPgConnection::establish(&env.database_url)
        .await
        .expect("connect");
    let settled = diesel::select(diesel::dsl::sql::<Bool>(
        "(SELECT count(*) = 3 AND bool_and(last_vacuum IS NOT NULL AND last_analyze IS NOT NULL) \
         FROM pg_stat_user_tables \
         WHERE relname IN ('properties', 'listing_counts', 'listing_versions'))",
    ))
    .get_result::<bool>(&mut conn)
    .await
    .expect("the table's statistics");
    assert!(
        settled,
        "VACUUM (ANALYZE) ran on properties and the tables that count them"
    );
}
