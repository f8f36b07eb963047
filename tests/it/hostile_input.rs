//! Input an attacker (or a careless export) sends: NUL bytes and control characters,
//! invisible titles, huge descriptions and import lines, prices that only look exact.
//! One rule set holds on every path (HTTP, CLI, import, both backends): each is refused
//! with a 4xx or a non-zero exit naming the field (and the line), and nothing is written.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::both_modes;
use crate::support::binary::{stderr, stdout};
use crate::support::{TestEnv, create, get, router, write};

both_modes!(
    bodies_follow_the_text_and_price_rules,
    the_cli_names_the_flag,
    import_names_the_line_and_the_field
);

async fn bodies_follow_the_text_and_price_rules(env: TestEnv) {
    let app = env.app().await;
    let router = router(&app);
    let existing = create(&app, "Existing").await;
    let item = format!("/properties/{}/", existing.id);
    let valid = json!({"title": "T", "price": "1", "location": "L"});
    let with = |field: &str, value: serde_json::Value| {
        let mut body = valid.clone();
        body[field] = value;
        body
    };
    let long = "d".repeat(10_001);
    let refused = [
        (
            with("title", json!("a\u{0}b")),
            "title",
            "control characters (found NUL)",
        ),
        (
            with("location", json!("\u{0}")),
            "location",
            "control characters (found NUL)",
        ),
        (
            with("description", json!("ok\u{0}")),
            "description",
            "found NUL",
        ),
        (
            with("description", json!("bell\u{7}")),
            "description",
            "found U+0007",
        ),
        (
            with("title", json!("tab\tin title")),
            "title",
            "found U+0009",
        ),
        (
            with("title", json!("\u{200B}\u{FEFF}")),
            "title",
            "must not be empty",
        ),
        (
            with("description", json!(long)),
            "description",
            "at most 10000 characters",
        ),
        (
            with("price", json!(null)),
            "price",
            "must be a string or a number",
        ),
        (with("title", json!(null)), "title", "must be a string"),
    ];
    for (body, field, rule) in refused {
        for (method, path) in [("POST", "/properties/"), ("PUT", item.as_str())] {
            let answer = write(&router, method, path, body.clone()).await;
            assert_eq!(answer.status, 422, "{method} {body}");
            let said = answer.json()["fields"][field]
                .as_str()
                .unwrap_or("")
                .to_owned();
            assert!(
                said.contains(rule),
                "{method} {field}: `{said}` lacks `{rule}`"
            );
        }
        let only = json!({field: body[field].clone()});
        let patched = write(&router, "PATCH", &item, only).await;
        assert_eq!(patched.status, 422, "PATCH {body}");
    }
    // Numbers are judged by their literal text, which serde_json::Value would round.
    for (price, rule) in [
        ("19.999999999999999", "at most 2 decimal places"),
        ("1e5", "decimal number"),
        ("-0.5", "must not be negative"),
    ] {
        let body = format!(r#"{{"title": "T", "price": {price}, "location": "L"}}"#);
        let answer = crate::support::request(
            &router,
            "POST",
            "/properties/",
            &[
                (
                    "authorization",
                    &format!("Bearer {}", crate::support::ADMIN_TOKEN),
                ),
                ("content-type", "application/json"),
            ],
            axum::body::Body::from(body),
        )
        .await;
        assert_eq!(answer.status, 422, "{price}");
        assert!(
            answer.json()["fields"]["price"]
                .as_str()
                .is_some_and(|said| said.contains(rule)),
            "{price}: {:?}",
            answer.body
        );
    }
    assert_eq!(
        get(&router, "/properties/").await.titles(),
        ["Existing"],
        "nothing was written"
    );
    assert_eq!(
        get(&router, &item).await.json()["title"],
        "Existing",
        "nothing was changed"
    );

    let accepted = write(
        &router,
        "POST",
        "/properties/",
        json!({
            "title": "\u{FEFF} Sea view\u{200B} ",
            "description": format!("\tline one\r\nline two{}", "x".repeat(9_980)),
            "price": 19.99,
            "location": "Malindi"
        }),
    )
    .await;
    assert_eq!(accepted.status, 201, "{:?}", accepted.body);
    let created = accepted.json();
    assert_eq!(created["title"], "Sea view", "invisible ends are trimmed");
    assert_eq!(created["price"], "19.99");
    assert!(
        created["description"]
            .as_str()
            .expect("description")
            .starts_with("line one\r\nline two")
    );
}

async fn the_cli_names_the_flag(env: TestEnv) {
    let long = "d".repeat(10_001);
    for (args, expected) in [
        (
            vec!["--title", "a\u{7}b", "--price", "1", "--location", "L"],
            "--title: must not contain control characters (found U+0007)",
        ),
        (
            vec![
                "--title",
                "T",
                "--price",
                "1",
                "--location",
                "L",
                "--description",
                &long,
            ],
            "--description: must be at most 10000 characters",
        ),
        (
            vec!["--title", "\u{200B}", "--price", "1", "--location", "L"],
            "--title: must not be empty",
        ),
        (
            vec!["--title", "T", "--price", " 5", "--location", "L"],
            "--price: must be a decimal number",
        ),
    ] {
        let mut full = vec!["create-property"];
        full.extend(args);
        let output = env.run(&full);
        assert!(!output.status.success(), "{full:?}");
        assert!(stderr(&output).contains(expected), "{}", stderr(&output));
    }
    let updated = env.run(&["update-property", "1", "--location", "a\u{1b}[31mred"]);
    assert!(
        stderr(&updated).contains("--location: must not contain control characters (found U+001B)"),
        "{}",
        stderr(&updated)
    );
    let listed = env.run(&["list-properties", "--search", "\u{7}"]);
    assert!(
        stderr(&listed).contains("--search: must not contain control characters"),
        "{}",
        stderr(&listed)
    );
}

async fn import_names_the_line_and_the_field(env: TestEnv) {
    assert!(env.run(&["migrate"]).status.success());
    let dir = env.dir.path();
    let file = |name: &str, contents: &[u8]| {
        let path = dir.join(name);
        std::fs::write(&path, contents).expect("write");
        path.display().to_string()
    };
    let long = "d".repeat(10_001);
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            file("nul.csv", b"title,price,location\nGood,1,Lamu\nBad\0title,2,Lamu\n"),
            vec!["line 3: title: must not contain control characters (found NUL)"],
        ),
        (
            file(
                "nul.jsonl",
                b"{\"title\": \"A\", \"price\": 1, \"location\": \"L\"}\n{\"title\": \"B\", \"price\": 1, \"location\": \"a\\u0000b\"}\n",
            ),
            vec!["line 2: location: must not contain control characters (found NUL)"],
        ),
        (
            file(
                "fields.jsonl",
                b"{\"title\": \"A\", \"price\": 19.999999999999999, \"location\": \"L\", \"rooms\": 3}\n",
            ),
            vec!["line 1: fields: unknown field(s) `rooms`"],
        ),
        (
            file(
                "price.jsonl",
                b"{\"title\": \"A\", \"price\": 19.999999999999999, \"location\": \"L\"}\n",
            ),
            vec!["line 1: price: must have at most 2 decimal places"],
        ),
        (
            file("columns.csv", b"title,price,location,rooms\nA,1,L,3\n"),
            vec!["line 1: unknown field(s) `rooms`"],
        ),
        (
            file(
                "long.csv",
                format!("title,price,location,description\nA,1,L,{long}\n").as_bytes(),
            ),
            vec!["line 2: description: must be at most 10000 characters"],
        ),
    ];
    for (path, expected) in &cases {
        let output = env.run(&["import", path]);
        assert!(!output.status.success(), "{path}");
        for line in expected {
            assert!(
                stderr(&output).contains(line),
                "{path}: {}",
                stderr(&output)
            );
        }
    }

    // A line longer than 1 MiB is refused when its first MiB has been read.
    let mut huge = b"{\"title\": \"A\", \"price\": 1, \"location\": \"L\"}\n".repeat(2);
    huge.extend(std::iter::repeat_n(b' ', 2 * 1024 * 1024));
    huge.extend(b"\n");
    let path = file("huge.jsonl", &huge);
    let output = env.run(&["import", &path]);
    assert!(
        stderr(&output).contains("line 3: the line is longer than 1 MiB"),
        "{}",
        stderr(&output)
    );
    let page = env.run(&["list-properties", "--json"]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&stdout(&page)).expect("JSON")["count"],
        0,
        "nothing was imported"
    );
}

/// `import /dev/zero` used to grow without bound: now it stops after the first MiB of
/// its first line. Memory is sampled from /proc while it runs.
#[test]
fn an_endless_line_fails_in_bounded_memory() {
    let env = TestEnv::embedded();
    let mut child = env
        .command(&["import", "/dev/zero", "--format", "jsonl"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn import");
    let status_file = format!("/proc/{}/status", child.id());
    let started = Instant::now();
    let mut peak_kib = 0u64;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "import /dev/zero never stopped"
        );
        if let Ok(text) = std::fs::read_to_string(&status_file)
            && let Some(rss) = text
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|kib| kib.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            peak_kib = peak_kib.max(rss);
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let mut message = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut message)
        .expect("read stderr");
    eprintln!(
        "import /dev/zero: {status} after {:?}, peak RSS {peak_kib} KiB",
        started.elapsed()
    );
    assert!(!status.success());
    assert!(
        message.contains("line 1: the line is longer than 1 MiB"),
        "{message}"
    );
    assert!(peak_kib < 100 * 1024, "peak RSS {peak_kib} KiB");
}

/// The file is read twice (validate, then insert); a pipe would be empty the second
/// time, so it is refused up front rather than half-imported.
#[test]
fn a_pipe_is_refused_before_anything_is_read() {
    let env = TestEnv::embedded();
    let fifo = env.dir.path().join("rows.jsonl");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    let output = env.run(&["import", fifo.to_str().expect("path")]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("is a pipe or socket"),
        "{}",
        stderr(&output)
    );
}
