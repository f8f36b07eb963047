//! A request head as RFC 9112 spells it, checked before hyper parses it (see `gate`):
//! where it ends, whether it fits, and whether its framing and Host are acceptable. A
//! head this module accepts is one hyper accepts too (it is at least as strict), so
//! every refusal is answered here, with a JSON body, and none by hyper's empty ones.

use std::net::Ipv6Addr;
use std::time::Duration;

use axum::http::{HeaderValue, Method, StatusCode, Uri};

/// The largest request head (request line and fields), below hyper's read buffer so
/// that hyper never refuses a head this module let through.
pub const MAX_HEAD_BYTES: usize = super::MAX_READ_BUFFER - 1024;

/// The longest request target: RFC 9112 §3 asks for request lines of 8000 octets.
pub const MAX_TARGET_BYTES: usize = 8 * 1024;

/// Most header lines; hyper is configured with the same number.
pub const MAX_HEADERS: usize = 100;

/// Why a head is refused: the status, and the message of its JSON body.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub message: String,
}

fn refuse(status: StatusCode, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        message: message.into(),
    }
}

/// Some of a head arrived, not all of it, within the header timeout `limit`.
pub fn timed_out(limit: Duration) -> Refusal {
    refuse(
        StatusCode::REQUEST_TIMEOUT,
        format!(
            "the request head (line and header fields) did not arrive within {}",
            crate::config::human_duration(limit)
        ),
    )
}

fn bad(message: impl Into<String>) -> Refusal {
    refuse(StatusCode::BAD_REQUEST, message)
}

fn too_large() -> Refusal {
    refuse(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        format!(
            "the request head (line and header fields) must be at most {} KiB",
            MAX_HEAD_BYTES / 1024
        ),
    )
}

fn uri_too_long() -> Refusal {
    refuse(
        StatusCode::URI_TOO_LONG,
        format!(
            "the request target must be at most {} KiB",
            MAX_TARGET_BYTES / 1024
        ),
    )
}

/// How the body of an accepted request is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    Length(u64),
    Chunked,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Accepted {
    /// `None`: no body.
    pub framing: Option<Framing>,
    /// Where the minor version digit of `HTTP/1.x`, x > 1, is: such a request is
    /// processed as HTTP/1.1 (RFC 9110 §2.5), which hyper knows as `1.1` only.
    pub minor_version_at: Option<usize>,
}

/// Finds where a head ends as bytes arrive, resuming where it stopped (a head sent a
/// byte at a time costs linear time), and refuses it as soon as it cannot fit.
#[derive(Debug, Default)]
pub struct Scanner {
    line_start: usize,
    searched: usize,
    seen_request_line: bool,
}

impl Scanner {
    /// `Ok(Some(length))` once `buf` starts with a whole head of that length.
    pub fn scan(&mut self, buf: &[u8]) -> Result<Option<usize>, Refusal> {
        while let Some(offset) = buf[self.searched..].iter().position(|&b| b == b'\n') {
            let end = self.searched + offset;
            let line = &buf[self.line_start..end];
            let empty = line.is_empty() || line == b"\r";
            self.line_start = end + 1;
            self.searched = end + 1;
            if !empty {
                self.seen_request_line = true;
            } else if self.seen_request_line {
                return Ok(Some(end + 1));
            }
            // Empty lines before the request line are skipped (RFC 9112 §2.2), as
            // hyper does.
        }
        self.searched = buf.len();
        if !self.seen_request_line {
            let line = &buf[self.line_start..];
            if let Some(space) = line.iter().position(|&b| b == b' ')
                && line.len() - space - 1 > MAX_TARGET_BYTES
            {
                return Err(uri_too_long());
            }
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Err(too_large());
        }
        Ok(None)
    }
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn shown(bytes: &[u8]) -> String {
    const MOST: usize = 100;
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MOST)]);
    let more = if bytes.len() > MOST { "…" } else { "" };
    format!("{}{more}", text.escape_debug())
}

fn trim_ows(mut value: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = value {
        value = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = value {
        value = rest;
    }
    value
}

/// The elements of a comma-separated field value across its lines, empty ones skipped
/// (RFC 9110 §5.6.1).
fn elements<'a>(lines: &'a [&'a [u8]]) -> impl Iterator<Item = &'a [u8]> {
    lines
        .iter()
        .flat_map(|line| line.split(|&b| b == b','))
        .map(trim_ows)
        .filter(|element| !element.is_empty())
}

/// Checks a whole head (as [`Scanner::scan`] delimited it): request line, field syntax,
/// Host, and the framing of its body, which may be at most `max_body` bytes long.
pub fn inspect(head: &[u8], max_body: u64) -> Result<Accepted, Refusal> {
    let mut lines = head
        .split(|&b| b == b'\n')
        .scan(0, |offset, line| {
            let at = *offset;
            *offset += line.len() + 1;
            Some((at, line.strip_suffix(b"\r").unwrap_or(line)))
        })
        .skip_while(|(_, line)| line.is_empty());
    let Some((line_at, request_line)) = lines.next() else {
        return Err(bad("the request has no request line"));
    };
    let request = request_line_of(request_line, line_at)?;
    fields(lines, request, max_body)
}

/// What is known of a head however little of it arrived, valid or not, for the answer
/// to a refused one and its access line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Seen {
    /// Once a space follows it, if it is a token.
    pub method: Option<Method>,
    /// Once the request line is whole, if it is valid and not too long.
    pub target: Option<Uri>,
    /// The first `X-Request-Id` among the whole header lines, as sent.
    pub request_id: Option<HeaderValue>,
}

/// What is known of the head that starts `bytes` (after the empty lines a head may
/// follow); bytes past its end are not looked at.
pub fn seen(bytes: &[u8]) -> Seen {
    let start = bytes
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(bytes.len());
    let bytes = &bytes[start..];
    // The piece after the last LF is not a whole line.
    let whole = bytes
        .iter()
        .rposition(|&b| b == b'\n')
        .map(|end| &bytes[..end]);
    let mut lines = whole
        .into_iter()
        .flat_map(|whole| whole.split(|&b| b == b'\n'))
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line));
    let request_line = lines.next();
    let first_line = request_line.unwrap_or(bytes);
    let method = first_line
        .iter()
        .position(|&b| b == b' ')
        .and_then(|space| Method::from_bytes(&first_line[..space]).ok());
    let request_id = lines.take_while(|line| !line.is_empty()).find_map(|line| {
        let colon = line.iter().position(|&b| b == b':')?;
        let (name, value) = (&line[..colon], trim_ows(&line[colon + 1..]));
        name.eq_ignore_ascii_case(b"x-request-id")
            .then(|| HeaderValue::from_bytes(value).ok())
            .flatten()
    });
    Seen {
        method,
        target: request_line.and_then(target_of),
        request_id,
    }
}

/// The target of a whole request line (`METHOD target VERSION`), if valid.
fn target_of(line: &[u8]) -> Option<Uri> {
    let first = line.iter().position(|&b| b == b' ')?;
    let last = line.iter().rposition(|&b| b == b' ')?;
    let target = line.get(first + 1..last)?;
    if target.is_empty() || target.len() > MAX_TARGET_BYTES {
        return None;
    }
    Uri::try_from(target).ok()
}

struct RequestLine {
    http_10: bool,
    minor_version_at: Option<usize>,
}

fn request_line_of(line: &[u8], line_at: usize) -> Result<RequestLine, Refusal> {
    const FORM: &str = "the request line must be `METHOD target HTTP/1.1`";
    let (Some(first), Some(last)) = (
        line.iter().position(|&b| b == b' '),
        line.iter().rposition(|&b| b == b' '),
    ) else {
        return Err(bad(FORM));
    };
    if first == last {
        return Err(bad(FORM));
    }
    let (method, target, version) = (&line[..first], &line[first + 1..last], &line[last + 1..]);
    if target.len() > MAX_TARGET_BYTES {
        return Err(uri_too_long());
    }
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(bad(format!(
            "the method `{}` is not a token",
            shown(method)
        )));
    }
    if target.is_empty() || target.contains(&b' ') {
        return Err(bad(FORM));
    }
    let (major, minor) = match version {
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            (major - b'0', minor - b'0')
        }
        _ => {
            return Err(bad(format!(
                "`{}` is not an HTTP version (HTTP/1.1)",
                shown(version)
            )));
        }
    };
    if major != 1 {
        return Err(refuse(
            StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            format!("HTTP/{major}.{minor} is not supported: use HTTP/1.1"),
        ));
    }
    // As hyper reads it; it has no form for an absolute URI without an authority, so
    // every target here names one, and Host may not be empty (RFC 9112 §3.2).
    Uri::try_from(target).map_err(|_| {
        bad(format!(
            "the request target `{}` is not valid",
            shown(target)
        ))
    })?;
    Ok(RequestLine {
        http_10: minor == 0,
        minor_version_at: (minor > 1).then_some(line_at + last + 1 + 7),
    })
}

fn fields<'a>(
    lines: impl Iterator<Item = (usize, &'a [u8])>,
    request: RequestLine,
    max_body: u64,
) -> Result<Accepted, Refusal> {
    let mut hosts = Vec::new();
    let mut transfer_codings = Vec::new();
    let mut lengths = Vec::new();
    let mut count = 0;
    for (_, line) in lines.take_while(|(_, line)| !line.is_empty()) {
        if line.starts_with(b" ") || line.starts_with(b"\t") {
            return Err(bad(
                "a header line starts with whitespace (obsolete line folding is not accepted)",
            ));
        }
        if line.contains(&b'\r') {
            return Err(bad("a header line holds a bare CR"));
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(bad(format!(
                "the header line `{}` has no colon",
                shown(line)
            )));
        };
        let (name, value) = (&line[..colon], trim_ows(&line[colon + 1..]));
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            // Whitespace before the colon included (RFC 9112 §5.1).
            return Err(bad(format!("`{}` is not a header name", shown(name))));
        }
        if !value
            .iter()
            .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80)
        {
            return Err(bad(format!(
                "the value of the header `{}` holds control characters",
                shown(name)
            )));
        }
        count += 1;
        if count > MAX_HEADERS {
            return Err(refuse(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!("a request may have at most {MAX_HEADERS} header lines"),
            ));
        }
        if name.eq_ignore_ascii_case(b"host") {
            hosts.push(value);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            transfer_codings.push(value);
        } else if name.eq_ignore_ascii_case(b"content-length") {
            lengths.push(value);
        }
    }
    check_host(&hosts, &request)?;
    let framing = if transfer_codings.is_empty() {
        content_length(&lengths, max_body)?.map(Framing::Length)
    } else {
        Some(transfer_coding(&transfer_codings, &lengths, &request)?)
    };
    Ok(Accepted {
        framing,
        minor_version_at: request.minor_version_at,
    })
}

/// RFC 9112 §3.2: one Host, valid; required on HTTP/1.1.
fn check_host(hosts: &[&[u8]], request: &RequestLine) -> Result<(), Refusal> {
    match hosts {
        [] if request.http_10 => Ok(()),
        [] => Err(bad("an HTTP/1.1 request must have a Host header")),
        [host] if valid_host(host) => Ok(()),
        [host] => Err(bad(format!(
            "the Host `{}` is not a valid host[:port]",
            shown(host)
        ))),
        _ => Err(bad("a request must have only one Host header")),
    }
}

/// RFC 9112 §6.1: only `chunked`, once, is implemented; anything else is 501, and the
/// connection closes without reading the body, whose end is unknown.
fn transfer_coding(
    lines: &[&[u8]],
    lengths: &[&[u8]],
    request: &RequestLine,
) -> Result<Framing, Refusal> {
    if request.http_10 {
        // RFC 9112 §6.1: faulty framing in HTTP/1.0.
        return Err(bad("an HTTP/1.0 request cannot have Transfer-Encoding"));
    }
    let codings: Vec<&[u8]> = elements(lines).collect();
    let not_implemented = |message: String| refuse(StatusCode::NOT_IMPLEMENTED, message);
    if let Some(other) = codings
        .iter()
        .find(|coding| !coding.eq_ignore_ascii_case(b"chunked"))
    {
        return Err(not_implemented(format!(
            "the transfer coding `{}` is not implemented: only `chunked`, once, is",
            shown(other)
        )));
    }
    match codings.len() {
        0 => Err(bad("Transfer-Encoding names no transfer coding")),
        1 if lengths.is_empty() => Ok(Framing::Chunked),
        // RFC 9112 §6.3: a message that may be smuggling a second one.
        1 => Err(bad(
            "a request must not have both Transfer-Encoding and Content-Length",
        )),
        n => Err(not_implemented(format!(
            "the transfer coding `chunked` applied {n} times is not implemented: only `chunked`, once, is"
        ))),
    }
}

/// RFC 9112 §6.3: one length (repeated values must agree), at most `max_body`.
fn content_length(lines: &[&[u8]], max_body: u64) -> Result<Option<u64>, Refusal> {
    let mut length: Option<Option<u64>> = None;
    for value in elements(lines) {
        if !value.iter().all(u8::is_ascii_digit) {
            return Err(bad(format!(
                "Content-Length `{}` is not a number of bytes",
                shown(value)
            )));
        }
        // `None`: more than any u64, which is too large all the same.
        let parsed = value.iter().try_fold(0u64, |n, digit| {
            n.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
        });
        match length {
            Some(earlier) if earlier != parsed => {
                return Err(bad("the request has different Content-Length values"));
            }
            _ => length = Some(parsed),
        }
    }
    match length {
        None if lines.is_empty() => Ok(None),
        None => Err(bad("Content-Length is empty")),
        Some(Some(0)) => Ok(None),
        Some(Some(n)) if n <= max_body => Ok(Some(n)),
        Some(_) => Err(refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body must be at most {} KiB", max_body / 1024),
        )),
    }
}

/// RFC 9110 §7.2 / RFC 3986 §3.2.2: `uri-host [ ":" port ]`, the host not empty (an
/// `http` URI cannot have an empty host, RFC 9110 §4.2.1).
fn valid_host(value: &[u8]) -> bool {
    let (host, port) = if let Some(literal) = value.strip_prefix(b"[") {
        let Some(close) = literal.iter().position(|&b| b == b']') else {
            return false;
        };
        if !ip_literal(&literal[..close]) {
            return false;
        }
        match &literal[close + 1..] {
            [] => return true,
            [b':', port @ ..] => (None, port),
            _ => return false,
        }
    } else {
        match value.iter().position(|&b| b == b':') {
            Some(colon) => (Some(&value[..colon]), &value[colon + 1..]),
            None => (Some(value), &b""[..]),
        }
    };
    host.is_none_or(reg_name) && port.iter().all(u8::is_ascii_digit)
}

/// A non-empty `reg-name` (an IPv4 address is one too).
fn reg_name(host: &[u8]) -> bool {
    let mut rest = host;
    while let [first, tail @ ..] = rest {
        rest = match (first, tail) {
            (b'%', [a, b, tail @ ..]) if a.is_ascii_hexdigit() && b.is_ascii_hexdigit() => tail,
            (b, tail) if is_unreserved(*b) || is_sub_delim(*b) => tail,
            _ => return false,
        };
    }
    !host.is_empty()
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~".contains(&b)
}

fn is_sub_delim(b: u8) -> bool {
    b"!$&'()*+,;=".contains(&b)
}

/// The inside of `[...]`: an IPv6 address, or `IPvFuture`.
fn ip_literal(inside: &[u8]) -> bool {
    if let [b'v' | b'V', rest @ ..] = inside {
        let Some(dot) = rest.iter().position(|&b| b == b'.') else {
            return false;
        };
        let (version, address) = (&rest[..dot], &rest[dot + 1..]);
        return !version.is_empty()
            && version.iter().all(u8::is_ascii_hexdigit)
            && !address.is_empty()
            && address
                .iter()
                .all(|&b| is_unreserved(b) || is_sub_delim(b) || b == b':');
    }
    std::str::from_utf8(inside).is_ok_and(|text| text.parse::<Ipv6Addr>().is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX_BODY: u64 = 64 * 1024;

    fn check(head: &str) -> Result<Accepted, Refusal> {
        let mut scanner = Scanner::default();
        let length = scanner
            .scan(head.as_bytes())
            .map(|end| end.expect("a whole head"))?;
        assert_eq!(length, head.len(), "{head:?}");
        inspect(head.as_bytes(), MAX_BODY)
    }

    fn status(head: &str) -> u16 {
        match check(head) {
            Ok(_) => 200,
            Err(refusal) => refusal.status.as_u16(),
        }
    }

    #[test]
    fn heads_end_at_the_first_empty_line_found_incrementally() {
        let head = b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\nGET /next";
        let mut scanner = Scanner::default();
        for end in 0..29 {
            assert_eq!(scanner.scan(&head[..end]), Ok(None), "{end}");
        }
        assert_eq!(scanner.scan(&head[..29]), Ok(Some(29)));
        let mut scanner = Scanner::default();
        assert_eq!(
            scanner.scan(b"GET / HTTP/1.1\nHost: a\n\nrest"),
            Ok(Some(24))
        );
    }

    #[test]
    fn long_targets_and_heads_are_refused_before_they_end() {
        let mut scanner = Scanner::default();
        let line = format!("GET /{}", "a".repeat(MAX_TARGET_BYTES));
        let refused = scanner.scan(line.as_bytes()).expect_err("too long");
        assert_eq!(refused.status, StatusCode::URI_TOO_LONG);
        let mut scanner = Scanner::default();
        let head = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(MAX_HEAD_BYTES));
        let refused = scanner.scan(head.as_bytes()).expect_err("too large");
        assert_eq!(refused.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let ok = |head: &str| check(head).expect("accepted").framing;
        assert_eq!(ok("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), None);
        assert_eq!(
            ok(
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\ncontent-length: 12, 12\r\n\r\n"
            ),
            Some(Framing::Length(12))
        );
        assert_eq!(
            ok("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n"),
            Some(Framing::Chunked)
        );
        for te in ["gzip, chunked", "chunked, chunked", "identity", "x-unknown"] {
            let head = format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {te}\r\n\r\n");
            let refused = check(&head).expect_err(te);
            assert_eq!(refused.status, StatusCode::NOT_IMPLEMENTED, "{te}");
        }
        let two_lines = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n";
        let refused = check(two_lines).expect_err("gzip");
        assert!(refused.message.contains("`gzip`"), "{}", refused.message);
        assert_eq!(
            status(
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"
            ),
            400
        );
        assert_eq!(
            status("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            400
        );
        assert_eq!(
            status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 2\r\n\r\n"),
            400
        );
        assert_eq!(
            status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n"),
            400
        );
        assert_eq!(
            status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 65537\r\n\r\n"),
            413
        );
        let huge = format!(
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
            "9".repeat(40)
        );
        assert_eq!(status(&huge), 413);
    }

    #[test]
    fn host_follows_rfc_9112() {
        let with_host = |host: &str| status(&format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n"));
        for good in [
            "example.com",
            "example.com:8080",
            "127.0.0.1:1",
            "[::1]",
            "[::1]:9000",
            "[v1.x:y]",
            "a%41b",
            "localhost:",
        ] {
            assert_eq!(with_host(good), 200, "{good}");
        }
        for bad in [
            "",
            "a b",
            "a/b",
            "a:b",
            ":80",
            "[::1",
            "[zz]",
            "[::1]x",
            "a%4",
            "a@b",
            "ex\u{e9}.com",
        ] {
            assert_eq!(with_host(bad), 400, "{bad:?}");
        }
        assert_eq!(status("GET / HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.0\r\n\r\n"), 200);
        assert_eq!(status("GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n"), 400);
        assert_eq!(status("GET http://a/ HTTP/1.1\r\nHost:\r\n\r\n"), 400);
    }

    #[test]
    fn versions_and_syntax() {
        let later = check("GET / HTTP/1.2\r\nHost: a\r\n\r\n").expect("as 1.1");
        assert_eq!(later.minor_version_at, Some(13));
        let later = check("\r\nGET / HTTP/1.9\r\nHost: a\r\n\r\n").expect("as 1.1");
        assert_eq!(later.minor_version_at, Some(15));
        assert_eq!(status("GET / HTTP/2.0\r\nHost: a\r\n\r\n"), 505);
        assert_eq!(status("GET / HTTP/1\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(status("GET  / HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(status("G(T / HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.1\r\nHost : a\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.1\r\nHost: a\r\nX: \x01\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.1\r\nHost: a\r\nnocolon\r\n\r\n"), 400);
        assert_eq!(status("GET /a<b HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
        let many = format!(
            "GET / HTTP/1.1\r\nHost: a\r\n{}\r\n",
            "X: y\r\n".repeat(MAX_HEADERS)
        );
        assert_eq!(status(&many), 431);
    }

    #[test]
    fn what_is_seen_of_a_head_however_far_it_arrived() {
        let whole = seen(b"\r\nHEAD /a?b=1 HTTP/1.1\r\nHost: a\r\nx-request-ID:  id-1 \r\n\r\nX-Request-Id: later\r\n");
        assert_eq!(whole.method, Some(Method::HEAD));
        assert_eq!(whole.target, Some(Uri::from_static("/a?b=1")));
        assert_eq!(
            whole.request_id,
            Some(HeaderValue::from_static("id-1")),
            "the first line's, not one past the head"
        );
        let started = seen(b"GET /a HTTP/1.1\r\nX-Request-Id: id-2\r\nX-Requ");
        assert_eq!(started.method, Some(Method::GET));
        assert_eq!(started.target, Some(Uri::from_static("/a")));
        assert_eq!(started.request_id, Some(HeaderValue::from_static("id-2")));
        let partial_id = seen(b"GET /a HTTP/1.1\r\nX-Request-Id: id-");
        assert_eq!(partial_id.request_id, None, "a line not yet whole");
        let partial_line = seen(b"PUT /propert");
        assert_eq!(partial_line.method, Some(Method::PUT));
        assert_eq!(partial_line.target, None);
        assert_eq!(seen(b"GE"), Seen::default());
        assert_eq!(seen(b""), Seen::default());
        let invalid = seen(b"G(T /a<b HTTP/1.1\r\n\r\n");
        assert_eq!((invalid.method, invalid.target), (None, None));
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(MAX_TARGET_BYTES));
        assert_eq!(seen(long.as_bytes()).target, None);
    }
}
