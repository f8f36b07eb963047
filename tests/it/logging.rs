//! Logs an operator can read on a bad day: one access line per request with a request
//! id, JSON lines for log shippers, and failure warnings that cannot flood.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use listings::logging::FAILURE_LOG_EVERY;
use serde_json::Value;

use crate::support::TestEnv;
use crate::support::binary::Server;

/// A GET with extra headers over a fresh connection; returns the response head.
fn get_with(address: SocketAddr, path: &str, headers: &str) -> String {
    let mut stream = TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n{headers}\r\n"
    )
    .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    response.split("\r\n\r\n").next().unwrap_or("").to_owned()
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

fn json_lines(server: &Server) -> Vec<Value> {
    server
        .log()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_one_access_line_per_request_with_its_id() {
    let env = TestEnv::embedded();
    let server = env.serve(&["--log-format", "json"]);
    let generated = get_with(server.address, "/properties/?search=villa", "");
    assert!(generated.starts_with("HTTP/1.1 200"), "{generated}");
    let id = header(&generated, "x-request-id")
        .expect("x-request-id")
        .to_owned();
    let echoed = get_with(
        server.address,
        "/properties/",
        "X-Request-Id: from-the-proxy-42\r\n",
    );
    assert_eq!(header(&echoed, "x-request-id"), Some("from-the-proxy-42"));
    let refused = get_with(
        server.address,
        "/nowhere",
        "X-Request-Id: has spaces, and more\r\n",
    );
    assert_ne!(
        header(&refused, "x-request-id"),
        Some("has spaces, and more"),
        "an id that could forge log fields is replaced"
    );
    server.wait_for_log("/nowhere").await;

    let lines = json_lines(&server);
    let access: Vec<&Value> = lines
        .iter()
        .filter(|line| line["target"] == "listings::access")
        .collect();
    assert_eq!(access.len(), 3, "one line per request: {lines:#?}");
    let first = access[0];
    assert_eq!(first["method"], "GET");
    assert_eq!(first["path"], "/properties/");
    assert_eq!(first["query"], "search=villa");
    assert_eq!(first["status"], 200);
    assert_eq!(first["cache"], "MISS");
    assert_eq!(first["request_id"], id.as_str());
    assert!(first["latency_ms"].as_f64().is_some_and(|ms| ms >= 0.0));
    assert_eq!(access[1]["request_id"], "from-the-proxy-42");
    assert_eq!(access[2]["status"], 404);
    // Lines logged while handling a request carry its id; the seed's per-request
    // cache lines stay.
    let cache_line = lines
        .iter()
        .find(|line| {
            line["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("all_properties cache miss"))
        })
        .expect("all_properties line");
    assert_eq!(cache_line["span"]["request_id"], "from-the-proxy-42");
}

/// Redis down: every request fails its cache call, yet one warning per interval is
/// logged, and the next one says how many were held back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_warnings_are_rate_limited_and_count_what_they_suppress() {
    let mut env = TestEnv::embedded();
    env.redis_url = Some("redis://127.0.0.1:1/".into());
    let server = env.serve(&["--log-format", "json"]);
    let cache_failures = |server: &Server| -> Vec<Value> {
        json_lines(server)
            .into_iter()
            .filter(|line| {
                line["level"] == "WARN"
                    && line["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with("cache ") && m.contains("failed"))
            })
            .collect()
    };
    // Requests for a while: the breaker lets a call through about once a second, each
    // fails, and only one line per interval may say so.
    let mut requests = 0;
    let mut warnings = Vec::new();
    let deadline = tokio::time::Instant::now() + FAILURE_LOG_EVERY * 3;
    while warnings.len() < 2 && tokio::time::Instant::now() < deadline {
        requests += 1;
        let answer = server.get(&format!("/properties/?page={requests}")).await;
        assert_eq!(answer.status, 200, "served from the database");
        warnings = cache_failures(&server);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    eprintln!("{requests} requests, {} warnings", warnings.len());
    assert_eq!(warnings.len(), 2, "{warnings:#?}");
    assert_eq!(warnings[0]["suppressed"], 0);
    assert!(
        warnings[1]["suppressed"].as_u64().is_some_and(|n| n > 0),
        "the second warning counts the held-back ones: {}",
        warnings[1]
    );
    assert!(requests > 20, "many failing requests, two lines");
}
