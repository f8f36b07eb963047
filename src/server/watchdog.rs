//! What a connection is doing, and how long it may keep doing it.
//!
//! | phase | entered when | may last |
//! |---|---|---|
//! | awaiting its first request head | the connection opens | `header_read_timeout` |
//! | awaiting a later request head | a byte arrives while idle | `header_read_timeout` |
//! | busy | hyper has the whole head and calls the application | no limit here: body and database have their own |
//! | idle | the application has answered | `idle_timeout` since the last byte written or read |
//!
//! A client sending its head one byte a second stays in the first phase and is cut at
//! the header timeout, however steadily it sends (with 408, as any connection cut with
//! part of a head: see `gate`); a client that reads its response slowly keeps the
//! connection idle-but-progressing, and one that stops reading is cut at the idle
//! timeout.
//!
//! At the connection cap, a connection still awaiting its first head may also be
//! displaced: the accept loop asks it to close ([`Activity::displace`]) to make room
//! (see the server's module documentation for who is picked). A later head does not
//! qualify: a client may send it before it has read the previous response, which the
//! connection may still be writing. The connection decides for itself whether it is
//! still displaceable, because only its own task changes its phase (hyper reads, calls
//! the service and writes inside it): when it looks, the answer cannot change under it.
//!
//! Phase changes cost the request path two atomic stores and nothing else: the watchdog
//! is never woken by them. It sleeps at most the shorter of the two limits at a time
//! and looks again, so a phase with a shorter limit is still cut on time: it began
//! after the watchdog last looked, so its deadline lies beyond the next look.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

use crate::config::HttpLimits;

const FIRST_HEAD: u8 = 0;
const BUSY: u8 = 1;
const IDLE: u8 = 2;
const NEXT_HEAD: u8 = 3;

/// A monotonic clock in milliseconds, read on every phase change, so cheap: the coarse
/// clock (advanced every kernel tick, a few milliseconds, plenty for timeouts of
/// seconds) is read from the vDSO without touching the time-stamp counter.
#[cfg(not(test))]
fn clock_ms() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec for the call to fill.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut now) } != 0 {
        static BASE: std::sync::LazyLock<std::time::Instant> =
            std::sync::LazyLock::new(std::time::Instant::now);
        return u64::try_from(BASE.elapsed().as_millis()).unwrap_or(u64::MAX);
    }
    u64::try_from(now.tv_sec).unwrap_or(0) * 1000
        + u64::try_from(now.tv_nsec).unwrap_or(0) / 1_000_000
}

/// Unit tests pause and advance tokio's clock instead.
#[cfg(test)]
fn clock_ms() -> u64 {
    thread_local! {
        static START: tokio::time::Instant = tokio::time::Instant::now();
    }
    START.with(|start| u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX))
}

/// A moment on the watchdog's clock: moments taken one after another compare in that
/// order, where durations computed one after another might not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Moment(u64);

impl Moment {
    pub fn elapsed(self) -> Duration {
        Duration::from_millis(clock_ms().saturating_sub(self.0))
    }
}

pub struct Activity {
    opened: u64,
    phase: AtomicU8,
    /// Milliseconds after `opened` at which the current phase's clock started.
    since: AtomicU64,
    /// Rung by the accept loop to ask the connection to make room.
    displace: Notify,
}

impl Activity {
    pub fn new() -> Activity {
        Activity {
            opened: clock_ms(),
            phase: AtomicU8::new(FIRST_HEAD),
            since: AtomicU64::new(0),
            displace: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        clock_ms().saturating_sub(self.opened)
    }

    fn enter(&self, phase: u8) {
        self.since.store(self.now(), Ordering::Release);
        self.phase.store(phase, Ordering::Release);
    }

    pub fn request_started(&self) {
        self.enter(BUSY);
    }

    pub fn request_finished(&self) {
        self.enter(IDLE);
    }

    fn bytes_read(&self) {
        if self
            .phase
            .compare_exchange(IDLE, NEXT_HEAD, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.since.store(self.now(), Ordering::Release);
        }
    }

    fn bytes_written(&self) {
        if self.phase.load(Ordering::Acquire) == IDLE {
            self.since.store(self.now(), Ordering::Release);
        }
    }

    /// When the connection began waiting for its first request head; `None` once it has
    /// had one.
    pub fn first_head_since(&self) -> Option<Moment> {
        (self.phase.load(Ordering::Acquire) == FIRST_HEAD)
            .then(|| Moment(self.opened + self.since.load(Ordering::Acquire)))
    }

    /// Asks the connection to close if it is still waiting for its first head. Asking
    /// again before it looks is asking once.
    pub fn displace(&self) {
        self.displace.notify_one();
    }

    /// Resolves, with how long the connection waited for its head, when it was asked to
    /// make room and is still waiting for its first head; a connection that has had a
    /// head by then ignores the request.
    pub async fn displaced(&self) -> Duration {
        loop {
            self.displace.notified().await;
            if let Some(since) = self.first_head_since() {
                return since.elapsed();
            }
        }
    }

    /// Resolves, with the limit it passed, when the current phase has lasted longer than
    /// it may.
    pub async fn expired(&self, limits: &HttpLimits) -> Duration {
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let look_again = millis(limits.header_read_timeout.min(limits.idle_timeout));
        loop {
            let limit = match self.phase.load(Ordering::Acquire) {
                FIRST_HEAD | NEXT_HEAD => Some(limits.header_read_timeout),
                IDLE => Some(limits.idle_timeout),
                _ => None,
            };
            let now = self.now();
            let Some(limit) = limit else {
                tokio::time::sleep(Duration::from_millis(look_again)).await;
                continue;
            };
            let deadline = self
                .since
                .load(Ordering::Acquire)
                .saturating_add(millis(limit));
            if now >= deadline {
                return limit;
            }
            let wait = (deadline - now).min(look_again);
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
    }
}

/// A stream that reports reads and writes to its connection's [`Activity`].
pub struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Watched<S> {
    pub fn new(inner: S, activity: Arc<Activity>) -> Watched<S> {
        Watched { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.bytes_read();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(written)) = polled
            && written > 0
        {
            self.activity.bytes_written();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(written)) = polled
            && written > 0
        {
            self.activity.bytes_written();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt as _;

    use super::*;

    fn limits() -> HttpLimits {
        HttpLimits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            ..HttpLimits::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_head_is_cut_at_the_header_timeout_however_steady() {
        let activity = Activity::new();
        let limits = limits();
        let expired = activity.expired(&limits);
        tokio::pin!(expired);
        for _ in 0..9 {
            tokio::time::advance(Duration::from_secs(1)).await;
            activity.bytes_read();
            assert!(expired.as_mut().now_or_never().is_none());
        }
        tokio::time::advance(Duration::from_millis(1001)).await;
        assert_eq!(
            expired.as_mut().now_or_never(),
            Some(Duration::from_secs(10))
        );
    }

    /// A watchdog sleeping on a long limit must notice that the connection moved to a
    /// phase with a shorter one.
    #[tokio::test(start_paused = true)]
    async fn a_shorter_limit_in_a_later_phase_takes_effect_at_once() {
        let limits = HttpLimits {
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(1),
            ..HttpLimits::default()
        };
        let activity = Activity::new();
        let expired = activity.expired(&limits);
        tokio::pin!(expired);
        tokio::time::advance(Duration::from_millis(500)).await;
        activity.request_started();
        assert!(expired.as_mut().now_or_never().is_none());
        activity.request_finished();
        assert!(expired.as_mut().now_or_never().is_none());
        tokio::time::advance(Duration::from_millis(900)).await;
        assert!(expired.as_mut().now_or_never().is_none(), "idle for 0.9 s");
        tokio::time::advance(Duration::from_millis(200)).await;
        assert_eq!(
            expired.as_mut().now_or_never(),
            Some(Duration::from_secs(1)),
            "idle for 1.1 s: the idle limit"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn only_a_connection_still_awaiting_its_first_head_is_displaced() {
        let waiting = Activity::new();
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(
            waiting.first_head_since().map(Moment::elapsed),
            Some(Duration::from_millis(1500))
        );
        let displaced = waiting.displaced();
        tokio::pin!(displaced);
        assert!(displaced.as_mut().now_or_never().is_none(), "not asked");
        waiting.displace();
        assert_eq!(
            displaced.as_mut().now_or_never(),
            Some(Duration::from_millis(1500))
        );

        // Asked, but its head was complete before it looked: it stays.
        let served = Activity::new();
        served.displace();
        served.request_started();
        assert_eq!(served.first_head_since(), None);
        let displaced = served.displaced();
        tokio::pin!(displaced);
        assert!(displaced.as_mut().now_or_never().is_none(), "busy");
        // A later head may follow a response still being written: never displaced.
        served.request_finished();
        served.bytes_read();
        assert_eq!(served.first_head_since(), None);
        served.displace();
        assert!(
            displaced.as_mut().now_or_never().is_none(),
            "awaiting a later head"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connections_live_until_the_idle_timeout_and_busy_ones_longer() {
        let activity = Activity::new();
        activity.request_started();
        let limits = limits();
        let expired = activity.expired(&limits);
        tokio::pin!(expired);
        tokio::time::advance(Duration::from_secs(120)).await;
        assert!(expired.as_mut().now_or_never().is_none(), "busy");
        activity.request_finished();
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(expired.as_mut().now_or_never().is_none(), "idle");
        activity.bytes_read();
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(expired.as_mut().now_or_never().is_none(), "a new head");
        tokio::time::advance(Duration::from_millis(1001)).await;
        assert!(expired.as_mut().now_or_never().is_some());
    }
}
