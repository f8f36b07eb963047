//! Long cached bodies go out with `sendfile`, from a memory copy of the body (see
//! `view::file_copy`). Over real TCP, to a client that reads late and a little at a
//! time (so the server's sends are partial), several responses on one kept-alive
//! connection must each be exactly the page: the same bytes as its gzip variant (never
//! sent from a file) decompressed, the same data as a fresh process reads; and a write
//! must retire such a page like any other.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use crate::both_modes;
use crate::support::TestEnv;
use crate::support::binary::{stderr, stdout};

both_modes!(long_bodies_are_sent_whole_from_their_copies);

const PAGE: &str = "/properties/?page_size=1000";

struct Response {
    x_cache: String,
    content_encoding: Option<String>,
    body: Vec<u8>,
}

/// One request on a kept-alive connection; the response is read only after a pause,
/// then in small pieces.
fn request(connection: &mut BufReader<TcpStream>, accept_encoding: Option<&str>) -> Response {
    let accept = accept_encoding.map_or(String::new(), |e| format!("Accept-Encoding: {e}\r\n"));
    write!(
        connection.get_mut(),
        "GET {PAGE} HTTP/1.1\r\nHost: test\r\n{accept}\r\n"
    )
    .expect("send the request");
    std::thread::sleep(Duration::from_millis(200));
    let mut status = String::new();
    connection.read_line(&mut status).expect("status line");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let (mut length, mut x_cache, mut content_encoding) = (None, String::new(), None);
    loop {
        let mut line = String::new();
        connection.read_line(&mut line).expect("header line");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(": ").expect("a header");
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = Some(value.parse::<usize>().expect("a length")),
            "x-cache" => value.clone_into(&mut x_cache),
            "content-encoding" => content_encoding = Some(value.to_owned()),
            _ => {}
        }
    }
    let length = length.expect("Content-Length");
    let mut body = vec![0; length];
    for piece in body.chunks_mut(8 * 1024) {
        connection.read_exact(piece).expect("the body");
        std::thread::sleep(Duration::from_millis(1));
    }
    Response {
        x_cache,
        content_encoding,
        body,
    }
}

/// A receive window of a few KiB, so that the server's sends of a long body stop
/// part-way again and again.
fn shrink_receive_buffer(stream: &TcpStream) {
    use std::os::fd::AsRawFd as _;
    let size: libc::c_int = 4096;
    // SAFETY: a valid socket, option and value of the size given.
    let set = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&raw const size).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(set, 0, "SO_RCVBUF: {}", std::io::Error::last_os_error());
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut plain)
        .expect("gzip");
    plain
}

/// What a fresh process reads for the page: its count and rows.
fn fresh(env: &TestEnv) -> serde_json::Value {
    let output = env.run(&["list-properties", "--json", "--page-size", "1000"]);
    assert!(output.status.success(), "{}", stderr(&output));
    serde_json::from_str(&stdout(&output)).expect("JSON")
}

/// A page's count and rows (without its links, which the CLI does not print).
fn count_and_rows(body: &[u8]) -> serde_json::Value {
    let page: serde_json::Value = serde_json::from_slice(body).expect("JSON");
    serde_json::json!({"count": page["count"], "data": page["data"]})
}

async fn long_bodies_are_sent_whole_from_their_copies(env: TestEnv) {
    let seeded = env.run(&["seed", "--count", "1000", "--seed", "3"]);
    assert!(seeded.status.success(), "{}", stderr(&seeded));
    let server = env.serve_writable(&[]);
    let stream = TcpStream::connect(server.address).expect("connect");
    shrink_receive_buffer(&stream);
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut connection = BufReader::new(stream);

    let rendered = request(&mut connection, None);
    assert_eq!(rendered.x_cache, "MISS");
    assert!(
        rendered.body.len() > 200 * 1024,
        "a body longer than the socket buffers: {} bytes",
        rendered.body.len()
    );
    assert!(
        count_and_rows(&rendered.body) == fresh(&env),
        "the page is not the data"
    );
    for _ in 0..3 {
        let hit = request(&mut connection, None);
        assert_eq!(hit.x_cache, "HIT");
        assert!(hit.content_encoding.is_none());
        assert!(
            hit.body == rendered.body,
            "a hit's body differs from the page"
        );
    }
    let gzip = request(&mut connection, Some("gzip"));
    assert_eq!(gzip.content_encoding.as_deref(), Some("gzip"));
    assert!(
        gunzip(&gzip.body) == rendered.body,
        "the identity body is not the page"
    );

    // A write to a row on the page retires it; the next hit is the new page.
    let first_id = count_and_rows(&rendered.body)["data"][0]["id"].clone();
    let (status, _) = server.send(
        "PATCH",
        &format!("/properties/{first_id}/"),
        Some(&serde_json::json!({"title": "Sent from a file no more"})),
    );
    assert_eq!(status, 200);
    let after = request(&mut connection, None);
    assert_eq!(after.x_cache, "MISS");
    let served = count_and_rows(&after.body);
    assert_eq!(served["data"][0]["title"], "Sent from a file no more");
    assert!(
        served == fresh(&env),
        "the page after the write is not the data"
    );
    let hit = request(&mut connection, None);
    assert_eq!(hit.x_cache, "HIT");
    assert!(
        hit.body == after.body,
        "a hit's body differs from the new page"
    );
}
