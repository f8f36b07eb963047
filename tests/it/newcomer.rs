//! The first ten minutes, as a newcomer meets them: every command works in a fresh
//! directory before `serve` ever ran, processes starting at once do not race on the
//! migrations, PostgreSQL with pending migrations names `listings migrate`, settings go
//! anywhere on the command line, and an error says its cause once.

use std::process::Output;

use crate::support::TestEnv;
use crate::support::binary::{stderr, stdout};

fn succeeds(output: &Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what} failed:\n{}",
        stderr(output)
    );
    stdout(output)
}

#[test]
fn every_command_works_first_on_a_fresh_directory() {
    let dir_of = |env: &TestEnv| env.dir.path().to_owned();
    let rows = "title,price,location\nVilla,1,Lamu\nFlat,2,Lamu\n";
    let first_commands: Vec<(&str, Vec<String>)> = vec![
        ("list-properties", vec!["list-properties".into()]),
        (
            "create-property",
            [
                "create-property",
                "--title",
                "T",
                "--price",
                "1",
                "--location",
                "L",
            ]
            .map(String::from)
            .to_vec(),
        ),
        ("seed", ["seed", "--count", "3"].map(String::from).to_vec()),
        ("import", vec!["import".into(), "rows.csv".into()]),
        ("migrate", vec!["migrate".into()]),
    ];
    for (name, args) in first_commands {
        let env = TestEnv::embedded();
        std::fs::write(dir_of(&env).join("rows.csv"), rows).expect("write");
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        succeeds(&env.run(&args), name);
        let listed = succeeds(&env.run(&["list-properties", "--json"]), "list");
        assert!(listed.contains("\"count\""), "{name}: {listed}");
    }
}

#[test]
fn migrate_status_lists_and_changes_nothing() {
    let env = TestEnv::embedded();
    let file = env.dir.path().join("listings.sqlite3");
    let before = succeeds(&env.run(&["migrate", "--status"]), "migrate --status");
    assert!(!file.exists(), "--status must not create the database");
    let lines: Vec<&str> = before.lines().collect();
    assert!(
        lines[0].starts_with("pending  2026-11-26-000000_create_properties"),
        "{before}"
    );
    assert!(
        lines.last().expect("summary").starts_with("0 applied, "),
        "{before}"
    );

    succeeds(&env.run(&["migrate"]), "migrate");
    let after = succeeds(&env.run(&["migrate", "--status"]), "migrate --status");
    assert!(
        after.lines().all(|line| !line.starts_with("pending")),
        "{after}"
    );
    assert!(after.contains(" applied, 0 pending"), "{after}");
}

/// Servers and commands started at the same moment on a fresh SQLite file take turns
/// on the migrations: none fails, each migration is applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_starting_at_once_do_not_race_on_migrations() {
    for _ in 0..3 {
        let env = TestEnv::embedded();
        let started: Vec<_> = [
            env.command(&["migrate"]),
            env.command(&[
                "create-property",
                "--title",
                "T",
                "--price",
                "1",
                "--location",
                "L",
            ]),
            env.command(&["list-properties"]),
            env.command(&["migrate"]),
        ]
        .into_iter()
        .map(|mut command| {
            command
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
        let server = env.serve(&[]);
        for child in started {
            let output = child.wait_with_output().expect("wait");
            succeeds(&output, "a concurrent command");
        }
        let status = succeeds(&env.run(&["migrate", "--status"]), "status");
        assert!(status.contains(" applied, 0 pending"), "{status}");
        assert_eq!(server.get("/health").await.status, 200);
    }
}

#[test]
fn settings_go_before_or_after_the_subcommand() {
    let env = TestEnv::embedded();
    let elsewhere = env.dir.path().join("elsewhere.sqlite3");
    let elsewhere = elsewhere.to_str().expect("path");
    succeeds(
        &env.run(&[
            "--database-url",
            elsewhere,
            "create-property",
            "--title",
            "Before",
            "--price",
            "1",
            "--location",
            "L",
        ]),
        "flag before",
    );
    succeeds(
        &env.run(&[
            "create-property",
            "--title",
            "After",
            "--price",
            "1",
            "--location",
            "L",
            "--database-url",
            elsewhere,
        ]),
        "flag after",
    );
    let listed = succeeds(
        &env.run(&["list-properties", "--json", "--database-url", elsewhere]),
        "list",
    );
    assert!(listed.contains("\"count\":2"), "{listed}");
    let default = succeeds(&env.run(&["list-properties", "--json"]), "default file");
    assert!(default.contains("\"count\":0"), "{default}");
}

#[test]
fn help_marks_required_flags_and_errors_name_flags() {
    let env = TestEnv::embedded();
    let help = succeeds(&env.run(&["create-property", "--help"]), "help");
    assert!(
        help.contains("Usage: listings create-property [OPTIONS] --title <TITLE> --price <PRICE> --location <LOCATION>"),
        "{help}"
    );
    let listed = env.run(&["list-properties", "--min-price", "abc"]);
    assert!(
        stderr(&listed).contains("--min-price: must be a decimal number"),
        "{}",
        stderr(&listed)
    );
}

/// An unreachable database or Redis: one line, the real cause, once.
#[test]
fn an_unreachable_dependency_is_one_line_with_its_cause_once() {
    let env = TestEnv::embedded();
    let cases: Vec<Vec<&str>> = vec![
        vec![
            "--database-url",
            "postgres://u@127.0.0.1:1/x",
            "list-properties",
        ],
        vec!["--database-url", "postgres://u@127.0.0.1:1/x", "migrate"],
        vec![
            "--database-url",
            "postgres://u@127.0.0.1:1/x",
            "serve",
            "--bind",
            "127.0.0.1:0",
        ],
        vec!["--redis-url", "redis://127.0.0.1:1/", "cache-metrics"],
        vec!["healthcheck", "--bind", "127.0.0.1:1"],
    ];
    for args in cases {
        let output = env.run(&args);
        let message = stderr(&output);
        assert!(!output.status.success(), "{args:?}");
        assert_eq!(message.trim().lines().count(), 1, "{args:?}: {message}");
        assert_eq!(
            message.matches("Connection refused").count(),
            1,
            "{args:?}: {message}"
        );
        assert!(message.contains("127.0.0.1:1"), "{args:?}: {message}");
    }
}

/// A PostgreSQL database with pending migrations: commands say so and name the fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(listings_test_services), ignore = "needs PostgreSQL and Redis")]
async fn pending_postgres_migrations_name_listings_migrate() {
    let mut env = TestEnv::postgres_redis().await;
    let empty = env.empty_postgres_database().await;
    env.database_url = empty.clone();
    for command in [
        vec!["list-properties"],
        vec!["serve", "--bind", "127.0.0.1:0"],
    ] {
        let output = env.run(&command);
        assert!(!output.status.success(), "{command:?}");
        assert!(
            stderr(&output).contains("pending migration(s)")
                && stderr(&output).contains("run `listings migrate` first"),
            "{command:?}: {}",
            stderr(&output)
        );
    }
    let status = succeeds(&env.run(&["migrate", "--status"]), "status");
    let all = postgres_migrations();
    assert!(
        status.contains(&format!("0 applied, {all} pending")),
        "{status}"
    );
    succeeds(&env.run(&["migrate"]), "migrate");
    succeeds(&env.run(&["list-properties"]), "list after migrate");
}

/// Replicas starting at the same moment each run `listings migrate` (as the Compose
/// file's `web` does): the advisory lock makes them take turns, every one exits 0, and
/// each migration is applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(listings_test_services), ignore = "needs PostgreSQL and Redis")]
async fn replicas_migrating_at_once_apply_each_postgres_migration_once() {
    let mut env = TestEnv::postgres_redis().await;
    env.database_url = env.empty_postgres_database().await;
    let started: Vec<_> = (0..4)
        .map(|_| {
            env.command(&["migrate"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    for child in started {
        succeeds(
            &child.wait_with_output().expect("wait"),
            "a concurrent migrate",
        );
    }
    let status = succeeds(&env.run(&["migrate", "--status"]), "status");
    let all = postgres_migrations();
    assert!(
        status.contains(&format!("{all} applied, 0 pending")),
        "{status}"
    );
    let psql = std::process::Command::new("psql")
        .args([
            env.database_url.as_str(),
            "-Atc",
            "SELECT count(*), count(DISTINCT version) FROM __diesel_schema_migrations",
        ])
        .output()
        .expect("psql");
    assert_eq!(
        stdout(&psql).trim(),
        format!("{all}|{all}"),
        "{}",
        stderr(&psql)
    );
}

/// `LISTINGS_TEST_DATABASE_URL` may name a database the server does not have yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(listings_test_services), ignore = "needs PostgreSQL and Redis")]
async fn a_missing_test_database_is_created() {
    use diesel_async::RunQueryDsl as _;

    use crate::support::backends::{DATABASE_ENV, connect_admin, with_database};

    let admin = std::env::var(DATABASE_ENV).expect(DATABASE_ENV);
    let name = format!("listings_missing_{}", std::process::id());
    let url = with_database(&admin, &name);
    drop(connect_admin(&url).await);
    let mut maintenance = connect_admin(&admin).await;
    let dropped = diesel::sql_query(format!("DROP DATABASE \"{name}\" WITH (FORCE)"))
        .execute(&mut maintenance)
        .await;
    assert!(dropped.is_ok(), "the database was created: {dropped:?}");
}

/// How many migrations the PostgreSQL folder holds, each applied once.
fn postgres_migrations() -> usize {
    let folder = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres");
    std::fs::read_dir(folder)
        .expect("the migrations folder")
        .filter(|entry| {
            entry
                .as_ref()
                .is_ok_and(|e| e.path().join("up.sql").is_file())
        })
        .count()
}
