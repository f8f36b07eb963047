//! HTTP as RFC 9110 and 9112 spell it, against the real binary over raw TCP (a client
//! library would normalise these requests): transfer codings other than one `chunked`
//! are 501 and close the connection unread; Host is required, single and valid;
//! `HTTP/1.2` is served as 1.1; unknown methods are 501, known ones a route lacks 405;
//! every error the HTTP layer answers has a JSON body; a request head cut short by its
//! timeout is 408, an idle connection is closed without a word; the admin address
//! answers only loopback names, IP addresses and the names it is given (DNS
//! rebinding).
//!
//! The server's behaviour does not depend on the backends, so these run embedded.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::dashboard::admin_address;
use crate::support::{ADMIN_TOKEN, TestEnv};

/// How long any answer may take before the test calls it a hang.
const BOUND: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct Response {
    status: u16,
    version: String,
    head: String,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (field, value) = line.split_once(':')?;
            field.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }

    /// The JSON error body, checked for its shape and content type.
    fn error(&self) -> String {
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{self:?}"
        );
        let body: serde_json::Value = serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"));
        let object = body.as_object().expect("an object");
        assert_eq!(object.len(), 1, "{body}");
        object["error"]
            .as_str()
            .expect("an error message")
            .to_owned()
    }

    fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|value| value.eq_ignore_ascii_case("close"))
    }
}

fn connect(address: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&address, BOUND).expect("connect");
    stream.set_read_timeout(Some(BOUND)).expect("timeout");
    stream
}

/// Sends `bytes` as they are, then reads every response until the server closes the
/// connection (within `BOUND`).
fn exchange(address: SocketAddr, bytes: &[u8]) -> Vec<Response> {
    let mut stream = connect(address);
    stream.write_all(bytes).expect("send");
    read_to_close(stream)
}

/// Every response until the server closes the connection (within `BOUND`).
fn read_to_close(mut stream: TcpStream) -> Vec<Response> {
    let mut data = Vec::new();
    stream.read_to_end(&mut data).unwrap_or_else(|e| {
        panic!(
            "not closed within {BOUND:?} ({e}): {}",
            String::from_utf8_lossy(&data)
        )
    });
    parse_responses(&data)
}

/// One response on a connection that stays open, within `BOUND`.
fn read_one(stream: &mut TcpStream) -> Response {
    let mut data = Vec::new();
    let mut buf = [0; 4096];
    loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .map_or(0, |n| n.trim().parse().expect("a length"));
            if data.len() >= end + 4 + length {
                return parse_responses(&data).remove(0);
            }
        }
        let n = stream.read(&mut buf).expect("a response within the bound");
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&data));
        data.extend_from_slice(&buf[..n]);
    }
}

fn parse_responses(mut data: &[u8]) -> Vec<Response> {
    let mut responses = Vec::new();
    while !data.is_empty() {
        let end = data
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no whole head: {}", String::from_utf8_lossy(data)));
        let head = String::from_utf8_lossy(&data[..end]).into_owned();
        let mut status_line = head.split(' ');
        let version = status_line.next().expect("version").to_owned();
        let status = status_line
            .next()
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("no status: {head}"));
        let mut response = Response {
            status,
            version,
            head,
            body: Vec::new(),
        };
        let length: usize = response
            .header("content-length")
            .map_or(0, |n| n.parse().expect("a length"));
        data = &data[end + 4..];
        response.body = data[..length].to_vec();
        data = &data[length..];
        responses.push(response);
    }
    responses
}

/// One request that must be refused with `status` and a JSON error, the connection
/// closed after it; returns the error message.
fn refused(address: SocketAddr, request: &str, status: u16) -> String {
    let responses = exchange(address, request.as_bytes());
    let [response] = &responses[..] else {
        panic!("one response to {request:?}, got {responses:?}");
    };
    assert_eq!(response.status, status, "{request:?}: {response:?}");
    assert!(response.closes(), "{request:?}: {response:?}");
    response.error()
}

/// A request the body of which, were it read, would be a second request.
const SMUGGLED: &str = "GET /health HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_codings_other_than_one_chunked_are_501_and_close_unread() {
    let env = TestEnv::embedded();
    let server = env.serve(&[]);
    for (codings, named) in [
        ("Transfer-Encoding: gzip, chunked", "gzip"),
        (
            "Transfer-Encoding: chunked, chunked",
            "chunked` applied 2 times",
        ),
        ("Transfer-Encoding: identity", "identity"),
        ("Transfer-Encoding: x-brew", "x-brew"),
        (
            "transfer-encoding: CHUNKED\r\nTransfer-Encoding: chunked",
            "applied 2 times",
        ),
        (
            "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked",
            "gzip",
        ),
        ("Transfer-Encoding: chunked;q=1", "chunked;q=1"),
    ] {
        let request = format!(
            "POST /properties/ HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
             {codings}\r\n\r\n{:x}\r\n{SMUGGLED}\r\n0\r\n\r\n",
            SMUGGLED.len()
        );
        let message = refused(server.address, &request, 501);
        assert!(message.contains(named), "{codings}: {message}");
    }

    // One chunked is read, and its connection closes after the answer (the server
    // does not look for a head after a chunked body).
    let body = r#"{"title": "T", "price": "1.00", "location": "L"}"#;
    let request = format!(
        "POST /properties/ HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n{SMUGGLED}",
        body.len()
    );
    let responses = exchange(server.address, request.as_bytes());
    assert_eq!(responses.len(), 1, "{responses:?}");
    // No token: the write API refuses it, having read it as one chunked request.
    assert_eq!(responses[0].status, 403, "{responses:?}");
    assert!(responses[0].closes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_is_required_single_and_valid() {
    let env = TestEnv::embedded();
    let server = env.serve(&[]);
    let address = server.address;
    let message = refused(address, "GET /health HTTP/1.1\r\n\r\n", 400);
    assert!(message.contains("Host"), "{message}");
    let message = refused(
        address,
        "GET /health HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
        400,
    );
    assert!(message.contains("only one Host"), "{message}");
    for host in [
        "",
        "a b",
        "a/b",
        "[::1",
        "a@b",
        "a:b",
        ":80",
        "ex\u{e9}.com",
    ] {
        let request = format!("GET /health HTTP/1.1\r\nHost: {host}\r\n\r\n");
        let message = refused(address, &request, 400);
        assert!(message.contains("Host"), "{host:?}: {message}");
    }
    // Refused after an earlier pipelined request, which is answered first.
    let responses = exchange(
        address,
        b"GET /health HTTP/1.1\r\nHost: test\r\n\r\nGET /health HTTP/1.1\r\n\r\n",
    );
    let statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 400], "{responses:?}");

    for good in ["localhost:8000", "[::1]:8000", "127.0.0.1", "example.com."] {
        let request = format!("GET /health HTTP/1.1\r\nHost: {good}\r\nConnection: close\r\n\r\n");
        let responses = exchange(address, request.as_bytes());
        assert_eq!(responses[0].status, 200, "{good}: {responses:?}");
    }
    // HTTP/1.0 needs none.
    let responses = exchange(address, b"GET /health HTTP/1.0\r\n\r\n");
    assert_eq!(responses[0].status, 200, "{responses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn later_minor_versions_are_1_1_and_unknown_methods_501() {
    let env = TestEnv::embedded();
    let server = env.serve(&[]);
    let address = server.address;
    for version in ["HTTP/1.2", "HTTP/1.9"] {
        let request = format!("GET /health {version}\r\nHost: test\r\nConnection: close\r\n\r\n");
        let responses = exchange(address, request.as_bytes());
        assert_eq!(responses.len(), 1, "{responses:?}");
        assert_eq!(responses[0].status, 200, "{version}: {responses:?}");
        assert_eq!(responses[0].version, "HTTP/1.1");
    }
    // Kept alive like a 1.1 request: two on one connection.
    let responses = exchange(
        address,
        b"GET /health HTTP/1.2\r\nHost: test\r\n\r\nGET /health HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(responses.len(), 2, "{responses:?}");
    let message = refused(address, "GET /health HTTP/2.0\r\nHost: test\r\n\r\n", 505);
    assert!(message.contains("HTTP/2.0"), "{message}");

    // Unknown methods: 501 without Allow, on any path; the connection stays usable.
    let responses = exchange(
        address,
        b"BREW /health HTTP/1.1\r\nHost: test\r\n\r\n\
          PROPFIND /properties/ HTTP/1.1\r\nHost: test\r\n\r\n\
          BREW /nowhere HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(responses.len(), 3, "{responses:?}");
    for response in &responses {
        assert_eq!(response.status, 501, "{response:?}");
        assert_eq!(response.header("allow"), None, "{response:?}");
        assert!(response.error().contains("not implemented"), "{response:?}");
    }
    // A known method a route lacks: 405 with Allow.
    let responses = exchange(
        address,
        b"DELETE /health HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(responses[0].status, 405, "{responses:?}");
    assert!(responses[0].header("allow").is_some(), "{responses:?}");
    assert_eq!(responses[0].error(), "method not allowed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_of_the_http_layer_are_json() {
    let env = TestEnv::embedded();
    let server = env.serve_writable(&["--body-timeout", "1"]);
    let address = server.address;

    let long_target = format!("/health?{}", "a".repeat(9 * 1024));
    let request = format!("GET {long_target} HTTP/1.1\r\nHost: test\r\n\r\n");
    refused(address, &request, 414);

    let big_header = format!("X-Big: {}", "a".repeat(70 * 1024));
    let request = format!("GET /health HTTP/1.1\r\nHost: test\r\n{big_header}\r\n\r\n");
    refused(address, &request, 431);
    let many = "X-Many: 1\r\n".repeat(101);
    let request = format!("GET /health HTTP/1.1\r\nHost: test\r\n{many}\r\n");
    refused(address, &request, 431);

    // A huge Content-Length is 413, told at once, whatever its size in digits.
    for length in ["65537", "1048576", "99999999999999999999999999999"] {
        let request = format!(
            "POST /properties/ HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
             Content-Length: {length}\r\n\r\n"
        );
        let message = refused(address, &request, 413);
        assert!(message.contains("64 KiB"), "{message}");
    }

    for malformed in [
        "GET /health\r\nHost: test\r\n\r\n",
        "GET  /health HTTP/1.1\r\nHost: test\r\n\r\n",
        "GET /health HTTP/1.1 \r\nHost: test\r\n\r\n",
        "GET /health HTTP/1.1\r\nHost: test\r\nno colon\r\n\r\n",
        "GET /health HTTP/1.1\r\nHost : test\r\n\r\n",
        "GET /health HTTP/1.1\r\nHost: test\r\nX: a\r\n folded\r\n\r\n",
        "GET /he<a>lth HTTP/1.1\r\nHost: test\r\n\r\n",
        "GET /health HTTP/1.1\r\nHost: test\r\nContent-Length: 1, 2\r\n\r\n",
        "GET /health HTTP/1.1\r\nHost: test\r\nContent-Length: x\r\n\r\n",
        "POST /properties/ HTTP/1.1\r\nHost: test\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
    ] {
        refused(address, malformed, 400);
    }

    // A HEAD that is refused gets the status and headers, no body.
    let mut stream = TcpStream::connect(address).expect("connect");
    stream.set_read_timeout(Some(BOUND)).expect("timeout");
    stream
        .write_all(b"HEAD /health HTTP/1.1\r\n\r\n")
        .expect("send");
    let mut data = String::new();
    stream.read_to_string(&mut data).expect("read to the end");
    assert!(data.starts_with("HTTP/1.1 400 "), "{data}");
    assert!(data.ends_with("\r\n\r\n"), "no body: {data}");
    assert!(
        data.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{data}"
    );

    // A body that does not arrive in time: 408, JSON (the head checks let it through).
    let request = format!(
        "POST /properties/ HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
         Authorization: Bearer {ADMIN_TOKEN}\r\nContent-Length: 10\r\n\r\n{{"
    );
    let responses = exchange(address, request.as_bytes());
    assert_eq!(responses.len(), 1, "{responses:?}");
    assert_eq!(responses[0].status, 408, "{responses:?}");
    assert!(responses[0].error().contains("did not arrive"));
}

/// A keep-alive request, answered 200.
const KEEP_ALIVE_GET: &[u8] = b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n";

/// The one answer to a head cut short by a 1 s timeout: 408, JSON, closing, not before
/// the timeout counted from `sent` (the server's clock starts later).
fn timed_out(responses: &[Response], sent: Instant) {
    let waited = sent.elapsed();
    let [response] = responses else {
        panic!("one answer, got {responses:?}");
    };
    assert_eq!(response.status, 408, "{response:?}");
    assert!(response.closes(), "{response:?}");
    let message = response.error();
    assert!(message.contains("did not arrive within 1 s"), "{message}");
    assert!(waited >= Duration::from_millis(900), "{waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_cut_short_by_its_timeout_is_408_and_an_idle_connection_closes_silently() {
    let env = TestEnv::embedded();
    let server = env.serve(&["--header-read-timeout", "1", "--idle-timeout", "1"]);
    let address = server.address;

    // The first head of a connection.
    let sent = Instant::now();
    let responses = exchange(address, b"GET /health HTTP/1.1\r\nHost: test\r\nX-Requ");
    timed_out(&responses, sent);

    // A later head, begun on a kept-alive connection after the previous answer.
    let mut stream = connect(address);
    stream.write_all(KEEP_ALIVE_GET).expect("send");
    assert_eq!(read_one(&mut stream).status, 200);
    let sent = Instant::now();
    stream.write_all(b"GET /he").expect("send");
    timed_out(&read_to_close(stream), sent);

    // A later head begun with the previous request, before its answer: the
    // connection is idle, and its idle timeout cuts the head short.
    let sent = Instant::now();
    let mut responses = exchange(address, &[KEEP_ALIVE_GET, b"GET /he"].concat());
    assert_eq!(responses.remove(0).status, 200);
    timed_out(&responses, sent);

    // No byte of a request: closed without a word, whether the connection is new,
    // sent only the empty line a request line may follow, or is kept alive and idle.
    assert!(exchange(address, b"").is_empty());
    assert!(exchange(address, b"\r\n").is_empty());
    let mut stream = connect(address);
    stream.write_all(KEEP_ALIVE_GET).expect("send");
    assert_eq!(read_one(&mut stream).status, 200);
    let later = read_to_close(stream);
    assert!(later.is_empty(), "{later:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_address_answers_only_names_it_knows() {
    let env = TestEnv::embedded();
    let mut command = env.command(&[
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--admin-bind",
        "127.0.0.1:0",
    ]);
    command.env(
        "LISTINGS_ADMIN_ALLOWED_HOSTS",
        "ops.example.com,dash.internal",
    );
    let server = crate::support::binary::Server::start(command);
    let admin = admin_address(&server.wait_for_log("dashboard on http://").await);
    let get = |host: &str, path: &str| {
        let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let responses = exchange(admin, request.as_bytes());
        assert_eq!(responses.len(), 1, "{responses:?}");
        responses.into_iter().next().expect("one")
    };
    for host in [
        format!("localhost:{}", admin.port()),
        "dash.localhost".to_owned(),
        admin.to_string(),
        format!("[::1]:{}", admin.port()),
        "ops.example.com".to_owned(),
        format!("OPS.Example.com.:{}", admin.port()),
        "dash.internal".to_owned(),
    ] {
        assert_eq!(get(&host, "/metrics").status, 200, "{host}");
    }
    for host in [
        "evil.example",
        "localhost.evil.example",
        "www.ops.example.com",
    ] {
        for path in ["/metrics", "/dashboard", "/dashboard/data", "/", "/nowhere"] {
            let response = get(host, path);
            assert_eq!(response.status, 421, "{host}{path}: {response:?}");
            assert_eq!(response.header("allow"), None);
            let message = response.error();
            assert!(message.contains(host), "{message}");
            assert!(message.contains("--admin-allowed-hosts"), "{message}");
        }
    }
    // An absolute-form target names the host instead of Host.
    let responses = exchange(
        admin,
        b"GET http://evil.example/metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(responses[0].status, 421, "{responses:?}");
    // The main address is not restricted.
    let responses = exchange(
        server.address,
        b"GET /health HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(responses[0].status, 200, "{responses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_admin_allowed_host_is_refused_at_start() {
    let env = TestEnv::embedded();
    let output = env.run(&["serve", "--admin-allowed-hosts", "ok.example,bad name"]);
    assert!(!output.status.success());
    let stderr = crate::support::binary::stderr(&output);
    assert!(stderr.contains("--admin-allowed-hosts"), "{stderr}");
    assert!(stderr.contains("bad name"), "{stderr}");
}
