//! A client socket that sends long cached bodies with `sendfile` from their memory
//! files (see `view::file_copy`), as nginx sends a static file, instead of copying them
//! into the socket. Everything else is written as usual.

use std::io;
use std::os::fd::{AsRawFd as _, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

use crate::view::file_copy;

/// Slices shorter than this are not looked up: the tail of a body whose start was sent
/// already is cheaper to copy than to find.
const LOOKED_UP_FROM: usize = 4096;

pub struct FileSending {
    stream: TcpStream,
}

impl FileSending {
    pub fn new(stream: TcpStream) -> FileSending {
        FileSending { stream }
    }
}

impl AsyncRead for FileSending {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for FileSending {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.as_mut()
            .poll_write_vectored(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let from_file = bufs.iter().enumerate().find_map(|(index, buf)| {
            (buf.len() >= LOOKED_UP_FROM)
                .then(|| file_copy::find(buf))
                .flatten()
                .map(|(file, offset)| (index, file, offset))
        });
        let Some((index, file, offset)) = from_file else {
            return Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        };
        let (head, body_len) = (&bufs[..index], bufs[index].len());
        let socket = self.stream.as_raw_fd();
        loop {
            ready!(self.stream.poll_write_ready(cx))?;
            let sent = self.stream.try_io(Interest::WRITABLE, || {
                send_head_then_file(socket, head, file.as_raw_fd(), offset, body_len)
            });
            match sent {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                sent => return Poll::Ready(sent),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Sends `head` (with `MSG_MORE`: the body follows at once), then `len` bytes of `file`
/// from `offset`. Returns how many bytes went, head first; `WouldBlock` only if none did.
fn send_head_then_file(
    socket: RawFd,
    head: &[io::IoSlice<'_>],
    file: RawFd,
    offset: u64,
    len: usize,
) -> io::Result<usize> {
    let head_len: usize = head.iter().map(|slice| slice.len()).sum();
    let mut sent = 0;
    if head_len > 0 {
        sent = send_more(socket, head)?;
        if sent < head_len {
            return Ok(sent);
        }
    }
    match send_file(socket, file, offset, len) {
        Ok(n) => Ok(sent + n),
        Err(_) if sent > 0 => Ok(sent),
        Err(e) => Err(e),
    }
}

fn send_more(socket: RawFd, head: &[io::IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: an all-zero msghdr is valid; `IoSlice` is ABI-compatible with `iovec` on
    // Unix, and `head` outlives the call.
    let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
    message.msg_iov = head.as_ptr().cast_mut().cast();
    message.msg_iovlen = head.len() as _;
    // SAFETY: `socket` is an open socket and `message` points at live buffers.
    let sent = unsafe { libc::sendmsg(socket, &message, libc::MSG_MORE | libc::MSG_NOSIGNAL) };
    usize::try_from(sent).map_err(|_| io::Error::last_os_error())
}

fn send_file(socket: RawFd, file: RawFd, offset: u64, len: usize) -> io::Result<usize> {
    let mut offset = libc::off_t::try_from(offset).map_err(io::Error::other)?;
    // SAFETY: both descriptors are open for the call's duration (the file's `Arc` is
    // held by the caller), and `offset` is a live local.
    let sent = unsafe { libc::sendfile(socket, file, &mut offset, len) };
    usize::try_from(sent).map_err(|_| io::Error::last_os_error())
}
