//! The client's bytes on their way to hyper: every request head is held back until it
//! is whole and `head` has checked it, so that malformed, oversized or unframeable
//! requests are answered with the JSON errors of the API rather than hyper's empty
//! ones (or none: hyper closes without a word on a bad Content-Length or
//! Transfer-Encoding).
//!
//! A refused head is replaced by a stand-in request (`GET /`, or `HEAD /` for a HEAD,
//! with `Connection: close`) and the refusal is left in the connection's [`Signals`],
//! with what was seen of the head, where the service finds it and answers (and logs)
//! it instead of routing. hyper thus writes the refusal itself, after any earlier
//! pipelined response and with its usual headers, then closes; nothing after the
//! refused head reaches it. On close, the unread rest of the request is drained for a
//! moment, so that the client is not reset before it reads the answer.
//!
//! When the connection's deadline passes (see `watchdog`), it tells the gate
//! ([`Signals::timed_out`]): a head that has begun is refused with 408 the same way;
//! with none begun (an idle connection, or a silent one), hyper is told the stream
//! ended, and closes without a word.
//!
//! To find the next head, bodies are counted off by their Content-Length. A chunked
//! body is passed through unread, and its response closes the connection (see the
//! service in `server`): later heads on that connection are never read.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::http::Method;
use bytes::{Buf as _, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::head::{self, Framing, Refusal, Scanner, Seen};

/// A refused head, as its answer and access line need it.
#[derive(Debug)]
pub struct Refused {
    pub refusal: Refusal,
    pub seen: Seen,
    /// When the head's first bytes were looked at.
    pub since: Instant,
}

/// What a connection's gate and the rest of the connection tell each other.
#[derive(Debug, Default)]
pub struct Signals {
    /// Where a refusal waits for its stand-in request.
    refused: OnceLock<Refused>,
    /// How long the connection waited, once that was too long.
    timed_out: OnceLock<Duration>,
}

impl Signals {
    pub fn refused(&self) -> Option<&Refused> {
        self.refused.get()
    }

    /// The connection waited `waited` for too long: the next time hyper reads, the gate
    /// refuses a head that has begun with 408, or ends the stream when none has.
    pub fn timed_out(&self, waited: Duration) {
        let _ = self.timed_out.set(waited);
    }
}

/// How much of the client's unread request is drained on close after a refusal, and
/// for how long at most.
const LINGER_BYTES: usize = 1 << 20;
const LINGER_FOR: Duration = Duration::from_secs(1);

/// Room made for the client's bytes before each read while a head is held back.
const READ_CHUNK: usize = 8 * 1024;

enum State {
    Head(Scanner),
    /// Bytes of the current body still to pass.
    Body(u64),
    /// After a chunked head: everything passes, unread.
    Through,
    /// After a refusal: nothing more passes.
    Refused,
}

pub struct Gate<S> {
    inner: S,
    /// Bytes from the client that hyper has not taken.
    buf: BytesMut,
    /// How many bytes at the start of `buf` hyper may take.
    released: usize,
    state: State,
    max_body: u64,
    signals: Arc<Signals>,
    /// When the current head's first bytes were looked at.
    head_since: Option<Instant>,
    linger: Option<(Pin<Box<tokio::time::Sleep>>, usize)>,
}

impl<S> Gate<S> {
    pub fn new(inner: S, max_body: u64, signals: Arc<Signals>) -> Gate<S> {
        Gate {
            inner,
            buf: BytesMut::new(),
            released: 0,
            state: State::Head(Scanner::default()),
            max_body,
            signals,
            head_since: None,
            linger: None,
        }
    }

    /// Looks at the bytes held back, once hyper has taken every released one (a head
    /// starts `buf`): releases a whole, accepted head with what has arrived of its body,
    /// or a stand-in for a refused one.
    fn advance(&mut self) {
        match &mut self.state {
            State::Refused => {}
            State::Through | State::Body(_) => self.release_body(),
            State::Head(scanner) => {
                self.head_since.get_or_insert_with(Instant::now);
                let checked = scanner.scan(&self.buf).and_then(|end| {
                    end.map(|end| head::inspect(&self.buf[..end], self.max_body).map(|a| (end, a)))
                        .transpose()
                });
                match checked {
                    Ok(None) => {}
                    Ok(Some((end, accepted))) => {
                        if let Some(at) = accepted.minor_version_at {
                            self.buf[at] = b'1';
                        }
                        self.released = end;
                        self.head_since = None;
                        self.state = match accepted.framing {
                            None => State::Head(Scanner::default()),
                            Some(Framing::Length(n)) => State::Body(n),
                            Some(Framing::Chunked) => State::Through,
                        };
                        self.release_body();
                    }
                    Err(refusal) => self.refuse(refusal),
                }
            }
        }
    }

    /// Releases what follows the released bytes of the current body, and moves to the
    /// next head at its end.
    fn release_body(&mut self) {
        if let State::Body(left) = &mut self.state {
            let available = (self.buf.len() - self.released) as u64;
            let passed = available.min(*left);
            self.released += passed as usize;
            *left -= passed;
            if *left == 0 {
                self.state = State::Head(Scanner::default());
            }
        } else if matches!(self.state, State::Through) {
            self.released = self.buf.len();
        }
    }

    fn refuse(&mut self, refusal: Refusal) {
        tracing::debug!(status = %refusal.status, error = %refusal.message, "request head refused");
        let seen = head::seen(&self.buf);
        // The answer to a HEAD has no body.
        let stand_in: &[u8] = if seen.method == Some(Method::HEAD) {
            b"HEAD / HTTP/1.1\r\nhost: refused\r\nconnection: close\r\n\r\n"
        } else {
            b"GET / HTTP/1.1\r\nhost: refused\r\nconnection: close\r\n\r\n"
        };
        let since = self.head_since.unwrap_or_else(Instant::now);
        // Set once: nothing passes after a refusal, so there is never a second.
        let _ = self.signals.refused.set(Refused {
            refusal,
            seen,
            since,
        });
        self.buf.clear();
        self.buf.extend_from_slice(stand_in);
        self.released = stand_in.len();
        self.state = State::Refused;
    }

    /// When the connection timed out: refuses a head that has begun (more than the
    /// empty lines a head may follow) with 408; `false` when none has.
    fn time_out(&mut self, waited: Duration) -> bool {
        let begun = matches!(self.state, State::Head(_))
            && self.buf.iter().any(|&b| b != b'\r' && b != b'\n');
        if begun {
            self.refuse(head::timed_out(waited));
        }
        begun
    }
}

impl<S: AsyncRead + Unpin> Gate<S> {
    /// Reads more of the client's bytes into `buf`; `Ok(false)` at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        self.buf.reserve(READ_CHUNK);
        let n = ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut self.inner),
            cx,
            &mut self.buf
        ))?;
        Poll::Ready(Ok(n > 0))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Gate<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.released > 0 {
                let n = this.released.min(out.remaining());
                out.put_slice(&this.buf[..n]);
                this.buf.advance(n);
                this.released -= n;
                return Poll::Ready(Ok(()));
            }
            match this.state {
                // The stand-in asks hyper to close: it needs nothing more, and an end
                // of stream now could cut the answer short.
                State::Refused => return Poll::Pending,
                State::Through if this.buf.is_empty() => {
                    return Pin::new(&mut this.inner).poll_read(cx, out);
                }
                _ => {}
            }
            if !this.buf.is_empty() {
                this.advance();
                if this.released > 0 || matches!(this.state, State::Refused) {
                    continue;
                }
            }
            if let Some(&waited) = this.signals.timed_out.get() {
                if this.time_out(waited) {
                    continue;
                }
                // Nothing begun: hyper closes as at the client's end of stream.
                return Poll::Ready(Ok(()));
            }
            if !ready!(this.poll_fill(cx))? {
                // The client is gone: hyper sees the end, whatever was held back
                // (a partial head) is dropped with the connection.
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Gate<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    /// After a refusal, drains the unread request for a moment once the answer is
    /// sent: closing a socket with unread bytes resets it, which may destroy the
    /// answer before the client reads it.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(Pin::new(&mut this.inner).poll_shutdown(cx))?;
        if !matches!(this.state, State::Refused) {
            return Poll::Ready(Ok(()));
        }
        let (deadline, drained) = this
            .linger
            .get_or_insert_with(|| (Box::pin(tokio::time::sleep(LINGER_FOR)), 0));
        let mut scratch = [0u8; 4096];
        loop {
            if *drained >= LINGER_BYTES || deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Ok(()));
            }
            let mut read = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) if !read.filled().is_empty() => {
                    *drained += read.filled().len();
                }
                Poll::Ready(_) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
