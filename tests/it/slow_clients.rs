//! The server's connection limits, against the real binary over raw TCP: slow or silent
//! request heads, idle keep-alive connections and slow bodies are cut at their timeouts;
//! a thousand slow clients do not keep a normal one out; the connection cap queues
//! clients instead of failing `accept`, and at the cap a new client displaces the
//! connection that has waited longest for its first request head (under a hard
//! file-descriptor limit of 1,024, set for the server alone); the file-descriptor limit
//! is raised at start; SIGTERM drains and exits 0 despite stuck clients.
//!
//! Timing: every wait has a generous upper bound (`BOUND`, for timeouts of 1-2 s) so a
//! hang fails instead of blocking, and nothing asserts that the server is fast. Lower
//! bounds are measured from before the client connected or sent, so slowness can only
//! lengthen them.

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use listings::metrics::parse_prometheus_sample;

use crate::support::binary::{Server, stdout};
use crate::support::{ADMIN_TOKEN, TestEnv};

/// How long anything the server must do at a 1 or 2 s timeout may take before the test
/// calls it a hang.
const BOUND: Duration = Duration::from_secs(15);
/// The server measures from its accept, which follows the client's `connect`.
const AT_LEAST_1_S: Duration = Duration::from_millis(900);
/// The start of a request head that never ends.
const PARTIAL_HEAD: &[u8] = b"GET /health HTTP/1.1\r\nHost: test\r\n";

/// A request head that never ends, byte by byte.
fn endless_head() -> impl Iterator<Item = u8> + Send + 'static {
    PARTIAL_HEAD
        .iter()
        .chain(b"X-Slow: ")
        .copied()
        .chain(std::iter::repeat(b'a'))
}

fn connect(address: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&address, BOUND).expect("connect");
    stream
        .set_write_timeout(Some(BOUND))
        .expect("write timeout");
    stream
}

fn connect_and_send(address: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut stream = connect(address);
    stream.write_all(bytes).expect("send");
    stream
}

fn get_request(path: &str, keep_alive: bool) -> String {
    let connection = if keep_alive { "keep-alive" } else { "close" };
    format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: {connection}\r\n\r\n")
}

/// Reads within what is left of `deadline`; `Ok(0)` at the end of the stream.
fn read_until(stream: &mut TcpStream, buf: &mut [u8], deadline: Instant) -> std::io::Result<usize> {
    let left = deadline.saturating_duration_since(Instant::now());
    stream.set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
    stream.read(buf)
}

/// Blocks until the server closes `stream` (end of stream or reset), at most `BOUND`.
fn wait_closed(stream: &mut TcpStream, what: &str) {
    let deadline = Instant::now() + BOUND;
    let mut buf = [0; 4096];
    loop {
        match read_until(stream, &mut buf, deadline) {
            Ok(0) => return,
            // Anything the server says before closing is its business.
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                ) =>
            {
                return;
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("{what}: still open after {BOUND:?}")
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

struct Response {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Response {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// One HTTP/1.1 response with a Content-Length, read within `BOUND`.
fn read_response(stream: &mut TcpStream) -> Response {
    let deadline = Instant::now() + BOUND;
    let mut data = Vec::new();
    let mut buf = [0; 4096];
    let mut fill = |data: &mut Vec<u8>| {
        let n = read_until(stream, &mut buf, deadline)
            .unwrap_or_else(|e| panic!("no whole response within {BOUND:?} ({e}): {data:?}"));
        assert!(
            n > 0,
            "closed mid-response: {}",
            String::from_utf8_lossy(data)
        );
        data.extend_from_slice(&buf[..n]);
    };
    let head_end = loop {
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        fill(&mut data);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status: {head}"));
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().expect("Content-Length"))
        })
        .unwrap_or_else(|| panic!("no Content-Length: {head}"));
    while data.len() < head_end + length {
        fill(&mut data);
    }
    Response {
        status,
        head,
        body: data[head_end..head_end + length].to_vec(),
    }
}

/// A whole `GET` on a connection of its own.
fn http_get(address: SocketAddr, path: &str) -> Response {
    let mut stream = connect_and_send(address, get_request(path, false).as_bytes());
    read_response(&mut stream)
}

/// Writes `bytes` one every 200 ms from a thread of its own, until they run out, a
/// write fails (the server closed) or it is stopped.
struct Trickle {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<usize>,
}

impl Trickle {
    fn start(stream: &TcpStream, bytes: impl Iterator<Item = u8> + Send + 'static) -> Trickle {
        let mut stream = stream.try_clone().expect("clone stream");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut sent = 0;
            for byte in bytes {
                if stopped.load(Ordering::Relaxed) || stream.write_all(&[byte]).is_err() {
                    break;
                }
                sent += 1;
                std::thread::sleep(Duration::from_millis(200));
            }
            sent
        });
        Trickle { stop, thread }
    }

    /// Stops writing; returns how many bytes were sent.
    fn stop(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("trickle thread")
    }
}

/// Writes the same endless head to each of `streams`, one byte a second, from a thread
/// of its own until stopped; a stream the server closed is written to in vain.
struct TrickleAll {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<TcpStream>>,
}

impl TrickleAll {
    fn start(mut streams: Vec<TcpStream>) -> TrickleAll {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            for byte in endless_head() {
                for stream in &mut streams {
                    let _ = stream.write(&[byte]);
                }
                let next = Instant::now() + Duration::from_secs(1);
                while Instant::now() < next {
                    if stopped.load(Ordering::Relaxed) {
                        return streams;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            streams
        });
        TrickleAll { stop, thread }
    }

    /// Stops writing; gives the streams back.
    fn stop(self) -> Vec<TcpStream> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("trickle thread")
    }
}

/// Whether the server has closed `stream` (end of stream or reset), without waiting.
fn is_closed(stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).expect("nonblocking");
    let closed = !matches!(stream.peek(&mut [0]), Err(e) if e.kind() == ErrorKind::WouldBlock);
    stream.set_nonblocking(false).expect("blocking");
    closed
}

/// The connection cap the server announced at start (`at most N connections`).
fn logged_cap(server: &Server) -> usize {
    let log = server.log();
    log.split("at most ")
        .nth(1)
        .and_then(|rest| rest.split(" connections").next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no connection cap in the start-up line:\n{log}"))
}

/// The soft and hard limits in the `Max open files` line of a `/proc/<pid>/limits`.
fn open_files(limits: &str) -> (String, String) {
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .unwrap_or_else(|| panic!("no Max open files in:\n{limits}"));
    let fields: Vec<&str> = line.split_whitespace().collect();
    (fields[3].to_owned(), fields[4].to_owned())
}

/// A sample of the server's `/metrics`.
fn metric(server: &Server, name: &str) -> u64 {
    let metrics = http_get(server.address, "/metrics");
    assert_eq!(metrics.status, 200);
    let text = String::from_utf8_lossy(&metrics.body);
    parse_prometheus_sample(&text, name).unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

/// The server process's open sockets (client connections, the listener, ...).
fn sockets(server: &Server) -> usize {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{}/fd", server.child.id())) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|entry| {
            std::fs::read_link(entry.path())
                .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"))
        })
        .count()
}

/// Waits (bounded) until the server holds at least `count` sockets: connections are only
/// held by the server once it has accepted them, not when `connect` returns.
fn wait_for_sockets(server: &Server, count: usize) {
    let deadline = Instant::now() + BOUND;
    while sockets(server) < count {
        assert!(
            Instant::now() < deadline,
            "the server holds {} sockets, not {count}, after {BOUND:?}",
            sockets(server)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (bounded) until the log holds `needle`: lines arrive through a pipe.
fn wait_for_log(server: &Server, needle: &str) -> String {
    let deadline = Instant::now() + BOUND;
    loop {
        let log = server.log();
        if log.contains(needle) {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "no `{needle}` in the log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn request_heads_must_arrive_within_the_header_timeout() {
    let env = TestEnv::embedded();
    let server = env.serve(&["--header-read-timeout", "1"]);
    let start = Instant::now();
    let mut silent = connect(server.address);
    let mut trickling = connect(server.address);
    // One byte every 200 ms: each byte is progress, but the head as a whole is late.
    let trickle = Trickle::start(&trickling, endless_head());

    wait_closed(&mut silent, "a client that sends nothing");
    let silent_closed = start.elapsed();
    wait_closed(&mut trickling, "a client sending its head byte by byte");
    let trickling_closed = start.elapsed();
    let sent = trickle.stop();
    eprintln!(
        "silent client closed after {silent_closed:?}; trickling one after {trickling_closed:?} and {sent} bytes"
    );
    assert!(silent_closed >= AT_LEAST_1_S, "{silent_closed:?}");
    assert!(trickling_closed >= AT_LEAST_1_S, "{trickling_closed:?}");
    assert!(sent >= 1);
    assert_eq!(
        http_get(server.address, "/health").status,
        200,
        "still serving"
    );
}

/// A keep-alive `GET /health` on `stream`, answered 200 and not closed.
fn keep_alive_get(stream: &mut TcpStream) {
    stream
        .write_all(get_request("/health", true).as_bytes())
        .expect("send");
    let response = read_response(stream);
    assert_eq!(response.status, 200);
    let head = response.head.to_ascii_lowercase();
    assert!(!head.contains("connection: close"), "{head}");
}

#[test]
fn idle_keep_alive_connections_are_closed_at_the_idle_timeout() {
    let env = TestEnv::embedded();
    // A long header timeout, so that only the idle timeout can close the connection.
    let server = env.serve(&["--idle-timeout", "1", "--header-read-timeout", "30"]);
    let mut stream = connect(server.address);
    // Clients connect ahead of their first request (browsers preconnect): the server
    // is timing the head by the time the request comes.
    std::thread::sleep(Duration::from_millis(500));
    // Two requests on one connection: it is kept alive between them.
    let mut last_sent = Instant::now();
    for _ in 0..2 {
        last_sent = Instant::now();
        keep_alive_get(&mut stream);
    }
    // The idle clock started when the last answer was written, after `last_sent`.
    wait_closed(&mut stream, "an idle keep-alive connection");
    let closed_after = last_sent.elapsed();
    eprintln!("idle connection closed {closed_after:?} after its last request");
    assert!(closed_after >= AT_LEAST_1_S, "{closed_after:?}");
}

#[test]
fn the_next_head_on_a_kept_alive_connection_must_arrive_within_the_header_timeout() {
    let env = TestEnv::embedded();
    // The default idle timeout (60 s) is far longer than the header timeout.
    let server = env.serve(&["--header-read-timeout", "1"]);
    let mut stream = connect(server.address);
    keep_alive_get(&mut stream);
    // Idle a moment between requests, as keep-alive clients do (well within 60 s), then
    // send the next head one byte every 200 ms: it is as late as a first one would be.
    std::thread::sleep(Duration::from_secs(2));
    let start = Instant::now();
    let trickle = Trickle::start(&stream, endless_head());
    wait_closed(
        &mut stream,
        "a kept-alive connection trickling its next head",
    );
    let closed_after = start.elapsed();
    let sent = trickle.stop();
    eprintln!("closed {closed_after:?} after the next head began, {sent} bytes into it");
    assert!(closed_after >= AT_LEAST_1_S, "{closed_after:?}");
}

#[test]
fn bodies_must_arrive_within_the_body_timeout() {
    let env = TestEnv::embedded();
    let server = env.serve(&["--body-timeout", "1", "--admin-token", ADMIN_TOKEN]);
    let body = br#"{"title":"Slow","description":"d","price":"1.00","location":"Lamu"}"#;
    let head = |length: usize| {
        format!(
            "POST /properties/ HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
             Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
        )
    };

    // 100 bytes announced, a few sent.
    let start = Instant::now();
    let mut short = connect_and_send(server.address, head(100).as_bytes());
    short.write_all(&body[..10]).expect("send");
    let response = read_response(&mut short);
    let answered_after = start.elapsed();
    assert_eq!(
        response.status,
        408,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    let error = response.json()["error"].as_str().expect("error").to_owned();
    assert!(error.contains("body"), "{error}");
    assert!(answered_after >= AT_LEAST_1_S, "{answered_after:?}");

    // The whole body, announced exactly but sent one byte every 200 ms (14 s in all).
    let mut slow = connect_and_send(server.address, head(body.len()).as_bytes());
    let trickle = Trickle::start(&slow, body.iter().copied());
    let response = read_response(&mut slow);
    let sent = trickle.stop();
    eprintln!("slow body refused after {sent} of {} bytes", body.len());
    assert_eq!(
        response.status,
        408,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    assert!(
        response.json()["error"]
            .as_str()
            .expect("error")
            .contains("body")
    );

    let listing = http_get(server.address, "/properties/");
    assert_eq!(listing.json()["count"], 0, "nothing was created");
}

#[test]
fn a_thousand_slow_clients_do_not_keep_a_normal_one_out() {
    const SLOW_CLIENTS: usize = 1000;
    raise_fd_limit_for(SLOW_CLIENTS);
    let env = TestEnv::embedded();
    let server = env.serve(&["--header-read-timeout", "30"]);
    let before = sockets(&server);
    let start = Instant::now();
    let slow: Vec<TcpStream> = (0..SLOW_CLIENTS)
        .map(|_| connect_and_send(server.address, PARTIAL_HEAD))
        .collect();
    wait_for_sockets(&server, before + SLOW_CLIENTS);
    eprintln!(
        "{SLOW_CLIENTS} slow clients connected and accepted in {:?}",
        start.elapsed()
    );

    let asked = Instant::now();
    let response = http_get(server.address, "/health");
    let took = asked.elapsed();
    eprintln!("GET /health with {SLOW_CLIENTS} slow clients connected: {took:?}");
    assert_eq!(response.status, 200);
    assert!(
        took < Duration::from_secs(10),
        "{took:?}: not well before the 30 s timeout"
    );

    // They were all still connected (their 30 s are not over): no end of stream, no reset.
    let still_open = slow
        .iter()
        .filter(|stream| {
            stream.set_nonblocking(true).expect("nonblocking");
            matches!(stream.peek(&mut [0]), Err(e) if e.kind() == ErrorKind::WouldBlock)
        })
        .count();
    assert_eq!(still_open, SLOW_CLIENTS, "after {:?}", start.elapsed());
}

#[test]
fn past_the_connection_cap_clients_wait_until_a_slot_frees() {
    const CAP: usize = 20;
    let env = TestEnv::embedded();
    let mut server = env.serve(&["--max-connections", "20", "--idle-timeout", "2"]);
    assert_eq!(logged_cap(&server), CAP, "{}", server.log());
    let before = sockets(&server);
    let start = Instant::now();
    // Answered and idle: they hold their slots, and are not displaced.
    let mut idle: Vec<TcpStream> = (0..CAP)
        .map(|_| {
            let mut stream = connect(server.address);
            keep_alive_get(&mut stream);
            stream
        })
        .collect();
    wait_for_sockets(&server, before + CAP);

    // The 21st waits (in the kernel's backlog, or accepted without a slot) until the idle
    // ones are cut, 2 s after their answers (after `start`); then it is served.
    let response = http_get(server.address, "/health");
    let served_after = start.elapsed();
    eprintln!("the client past the cap was served after {served_after:?}");
    assert_eq!(response.status, 200);
    assert!(
        served_after >= Duration::from_millis(1900),
        "{served_after:?}"
    );
    for stream in &mut idle {
        wait_closed(stream, "an idle connection holding a slot");
    }

    assert_eq!(
        metric(&server, "listings_http_connections_displaced_total"),
        0,
        "still serving, and nothing displaced"
    );
    assert!(
        server.child.try_wait().expect("status").is_none(),
        "still running"
    );
    let log = server.log();
    assert!(!log.contains("cannot accept"), "{log}");
}

/// Under a hard limit of 1,024 file descriptors the cap is below 1,000, so a thousand
/// clients sending their heads a byte a second fill it (and queue behind it); a normal
/// client must still be served within about a second, not at the 10 s header timeout
/// that would otherwise free the first slot.
#[test]
fn at_a_low_hard_limit_a_new_client_displaces_the_longest_stalled_head() {
    const SLOW_CLIENTS: usize = 1000;
    const HARD_LIMIT: u64 = 1024;
    raise_fd_limit_for(SLOW_CLIENTS);
    let env = TestEnv::embedded();
    let mut command = env.command(&[
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--header-read-timeout",
        "10",
    ]);
    // SAFETY: between fork and exec the closure makes one system call and allocates
    // nothing.
    unsafe {
        command.pre_exec(|| rlimit::setrlimit(rlimit::Resource::NOFILE, HARD_LIMIT, HARD_LIMIT));
    }
    let server = Server::start(command);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.child.id()))
        .expect("read limits");
    assert_eq!(
        open_files(&limits),
        (HARD_LIMIT.to_string(), HARD_LIMIT.to_string())
    );
    let cap = logged_cap(&server);
    assert!(
        cap < SLOW_CLIENTS,
        "cap {cap}: the slow clients must fill it"
    );

    let before = sockets(&server);
    let start = Instant::now();
    let slow = TrickleAll::start((0..SLOW_CLIENTS).map(|_| connect(server.address)).collect());
    wait_for_sockets(&server, before + cap);
    eprintln!(
        "{SLOW_CLIENTS} slow clients connected, {cap} of them accepted, in {:?}",
        start.elapsed()
    );

    // The stalled heads are new: the normal client waits until the oldest may be
    // displaced, after the slow clients queued ahead of it in the backlog.
    let asked = Instant::now();
    let mut normal = connect(server.address);
    keep_alive_get(&mut normal);
    let took = asked.elapsed();
    eprintln!("GET /health at the cap of {cap}: {took:?}");
    assert!(
        took < Duration::from_secs(3),
        "{took:?}: not well before the 10 s header timeout"
    );

    // Its connection stays open, idle, in its slot. The heads keep trickling in, which
    // does not spare them: the next client displaces one too.
    std::thread::sleep(Duration::from_millis(1500));
    let asked = Instant::now();
    let displaced = metric(&server, "listings_http_connections_displaced_total");
    let took = asked.elapsed();
    eprintln!("GET /metrics at the cap, the heads 1.5 s older: {took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    // One displaced for each slow client past the cap, the normal client and this
    // request: nothing else frees a slot this early.
    assert_eq!(displaced, (SLOW_CLIENTS - cap + 2) as u64);
    let displaced = usize::try_from(displaced).expect("a count");
    let log = wait_for_log(&server, "to make room for a new client");
    let lines = log.matches("to make room for a new client").count();
    let allowed = 1 + start.elapsed().as_secs() / 5;
    assert!(
        lines as u64 <= allowed,
        "{lines} displacement lines for {displaced} displacements: not throttled\n{log}"
    );

    // The displaced are those that had waited longest: the first accepted.
    let mut slow = slow.stop();
    for stream in &mut slow[..displaced] {
        wait_closed(stream, "a displaced slow client");
    }
    let still_open = slow[displaced..]
        .iter()
        .filter(|stream| !is_closed(stream))
        .count();
    assert_eq!(
        still_open,
        SLOW_CLIENTS - displaced,
        "after {:?}",
        start.elapsed()
    );
}

#[test]
fn the_file_descriptor_limit_is_raised_to_the_hard_limit() {
    let (_, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).expect("getrlimit");
    assert!(
        hard > 1024,
        "this test needs a hard file-descriptor limit above 1024, not {hard}"
    );
    let lower_soft_limit = "ulimit -Sn 256 && exec \"$0\" \"$@\"";
    // The wrapper does lower the soft limit of what it runs.
    let control = Command::new("sh")
        .args(["-c", lower_soft_limit, "cat", "/proc/self/limits"])
        .output()
        .expect("sh");
    assert_eq!(
        open_files(&stdout(&control)),
        ("256".into(), hard.to_string())
    );

    let env = TestEnv::embedded();
    let base = env.command(&[]);
    let mut command = Command::new("sh");
    command
        .args(["-c", lower_soft_limit, env!("CARGO_BIN_EXE_listings")])
        .args(["serve", "--bind", "127.0.0.1:0"]);
    for (name, value) in base.get_envs() {
        match value {
            Some(value) => command.env(name, value),
            None => command.env_remove(name),
        };
    }
    command.current_dir(base.get_current_dir().expect("working directory"));
    let server = Server::start(command);

    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.child.id()))
        .expect("read limits");
    let (soft, hard_now) = open_files(&limits);
    assert_eq!((soft, hard_now), (hard.to_string(), hard.to_string()));

    let cap = logged_cap(&server) as u64;
    // Sized from the raised limit, not the 256 the process started with.
    assert!(cap > 256 && cap < hard, "cap {cap}, hard limit {hard}");
}

#[test]
fn sigterm_closes_stuck_and_idle_connections_and_exits_zero() {
    let env = TestEnv::embedded();
    let help = env.run(&["serve", "--help"]);
    let help = stdout(&help);
    let shutdown_help = help
        .split("--shutdown-timeout")
        .nth(1)
        .and_then(|rest| rest.split("\n      --").next())
        .unwrap_or_else(|| panic!("no --shutdown-timeout in:\n{help}"));
    assert!(shutdown_help.contains("[default: 30]"), "{shutdown_help}");

    let mut server = env.serve(&["--shutdown-timeout", "2"]);
    let before = sockets(&server);
    let mut stuck = connect_and_send(server.address, PARTIAL_HEAD);
    let mut idle = connect_and_send(server.address, get_request("/health", true).as_bytes());
    assert_eq!(read_response(&mut idle).status, 200);
    wait_for_sockets(&server, before + 2);

    let start = Instant::now();
    let status = server.terminate_within(BOUND);
    eprintln!("exited {status} {:?} after SIGTERM", start.elapsed());
    assert_eq!(status.code(), Some(0), "{}", server.log());
    wait_for_log(&server, "shutting down");
    wait_closed(&mut stuck, "a client stuck mid-head");
    wait_closed(&mut idle, "an idle keep-alive connection");
}

/// Raises this process's soft file-descriptor limit so that `clients` connections fit,
/// with room to spare; fails the test when the hard limit does not allow it.
fn raise_fd_limit_for(clients: usize) {
    let limit = rlimit::increase_nofile_limit(u64::MAX).expect("raise the fd limit");
    assert!(
        limit >= clients as u64 + 256,
        "this test needs {} file descriptors; the hard limit allows {limit}",
        clients + 256
    );
}
