//! Logs an operator can read on a bad day: one access line per request with a request
//! id (requests the server refuses before any route included), JSON lines for log
//! shippers, and failure warnings that cannot flood.

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

/// Sends `bytes` as they are on a fresh connection; returns the response head.
fn raw_exchange(address: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream.write_all(bytes).expect("send");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("read");
    let response = String::from_utf8_lossy(&response).into_owned();
    response.split("\r\n\r\n").next().unwrap_or("").to_owned()
}

/// A request refused before any route, and what its access line must say.
struct Refused {
    request: Vec<u8>,
    status: u16,
    method: &'static str,
    path: &'static str,
    query: &'static str,
    /// The client's `X-Request-Id`, when it sent a plain one.
    id: Option<&'static str>,
}

fn refused(
    request: impl Into<Vec<u8>>,
    status: u16,
    (method, path, query): (&'static str, &'static str, &'static str),
    id: Option<&'static str>,
) -> Refused {
    Refused {
        request: request.into(),
        status,
        method,
        path,
        query,
        id,
    }
}

/// The server's own refusals (the checks of the request head, the head timeout,
/// unknown methods) are answered before any route, yet logged like every request,
/// with what was read of the request, and they carry a request id as others do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_refused_before_any_route_get_an_access_line_and_an_id() {
    let env = TestEnv::embedded();
    let server = env.serve(&["--log-format", "json", "--header-read-timeout", "1"]);
    let long_target = format!(
        "GET /health?{} HTTP/1.1\r\nHost: test\r\n\r\n",
        "a".repeat(9 * 1024)
    );
    let many_lines = format!(
        "GET /health HTTP/1.1\r\nHost: test\r\nX-Request-Id: many-lines\r\n{}\r\n",
        "X-Many: 1\r\n".repeat(101)
    );
    let cases = [
        refused(
            "GET /health?x=1 HTTP/1.1\r\nX-Request-Id: no-host\r\n\r\n",
            400,
            ("GET", "/health", "x=1"),
            Some("no-host"),
        ),
        refused(
            "HEAD /health HTTP/1.1\r\nX-Request-Id: has spaces\r\n\r\n",
            400,
            ("HEAD", "/health", ""),
            None,
        ),
        refused(
            "G(T /health HTTP/1.1\r\nHost: test\r\n\r\n",
            400,
            ("-", "/health", ""),
            None,
        ),
        refused(
            "POST /properties/ HTTP/1.1\r\nHost: test\r\nx-request-id: gzipped\r\n\
             Transfer-Encoding: gzip\r\n\r\n",
            501,
            ("POST", "/properties/", ""),
            Some("gzipped"),
        ),
        refused(
            "BREW /health HTTP/1.1\r\nHost: test\r\nConnection: close\r\nX-Request-Id: brew\r\n\r\n",
            501,
            ("BREW", "/health", ""),
            Some("brew"),
        ),
        refused(
            "POST /properties/ HTTP/1.1\r\nHost: test\r\nContent-Length: 1048576\r\n\r\n",
            413,
            ("POST", "/properties/", ""),
            None,
        ),
        refused(long_target, 414, ("GET", "-", ""), None),
        refused(many_lines, 431, ("GET", "/health", ""), Some("many-lines")),
        refused(
            "GET /health HTTP/2.0\r\nHost: test\r\nX-Request-Id: two\r\n\r\n",
            505,
            ("GET", "/health", ""),
            Some("two"),
        ),
        refused(
            "GET /health?slow=1 HTTP/1.1\r\nHost: test\r\nX-Request-Id: slow\r\nX-Mo",
            408,
            ("GET", "/health", "slow=1"),
            Some("slow"),
        ),
    ];
    let mut ids = Vec::new();
    for case in &cases {
        let head = raw_exchange(server.address, &case.request);
        let what = String::from_utf8_lossy(&case.request[..case.request.len().min(60)]);
        let status = format!("HTTP/1.1 {} ", case.status);
        assert!(head.starts_with(&status), "{what}: {head}");
        let id = header(&head, "x-request-id")
            .unwrap_or_else(|| panic!("{what}: no x-request-id in {head}"))
            .to_owned();
        match case.id {
            Some(sent) => assert_eq!(id, sent, "{what}"),
            // A new one, in the server's form: not the client's, when it was not plain.
            None => assert!(
                id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
                "{what}: {id}"
            ),
        }
        ids.push(id);
    }
    server
        .wait_for_log(&format!("\"request_id\":\"{}\"", ids[ids.len() - 1]))
        .await;

    let lines = json_lines(&server);
    let access: Vec<&Value> = lines
        .iter()
        .filter(|line| line["target"] == "listings::access")
        .collect();
    assert_eq!(
        access.len(),
        cases.len(),
        "one line per request: {access:#?}"
    );
    for ((case, id), line) in cases.iter().zip(&ids).zip(&access) {
        let what = String::from_utf8_lossy(&case.request[..case.request.len().min(60)]);
        assert_eq!(line["request_id"], id.as_str(), "{what}: {line}");
        assert_eq!(line["status"], case.status, "{what}: {line}");
        assert_eq!(line["method"], case.method, "{what}: {line}");
        assert_eq!(line["path"], case.path, "{what}: {line}");
        assert_eq!(line["query"], case.query, "{what}: {line}");
        assert_eq!(line["cache"], "-", "{what}: {line}");
        assert_eq!(line["message"], "request", "{what}: {line}");
    }
    // The timed-out head's latency is the time the server waited for it.
    let waited = access[access.len() - 1]["latency_ms"].as_f64();
    assert!(
        waited.is_some_and(|ms| (900.0..5000.0).contains(&ms)),
        "{waited:?}"
    );
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
