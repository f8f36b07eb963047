//! Large uncompressed bodies kept in memory files too, so that the server can hand them
//! to the kernel with `sendfile` (as nginx does with a static file) instead of copying
//! them into the socket on every hit: that copy was most of a hit's cost.
//!
//! A [`FileCopy`] registers the address range of the body it copied, for as long as it
//! lives; its owner keeps the body alive too. While a range is registered its memory
//! therefore holds those very bytes and nothing else can live there, so a write of a
//! slice within it can be sent from the file instead (see [`find`]). Once the last copy
//! of a range is dropped, a write still under way simply copies the rest: the bytes are
//! the same.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write as _;
use std::os::fd::FromRawFd as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, RwLock};

use bytes::Bytes;

/// Bodies shorter than this are copied: `sendfile` pays off only past a few pages.
pub const MIN_LEN: usize = 16 * 1024;

/// Memory files open at once, at most: each costs a file descriptor.
pub const MOST_FILES: usize = 128;

struct Registered {
    len: usize,
    file: Arc<File>,
    /// Live [`FileCopy`]s of this range (one body may be in several ready responses).
    copies: usize,
}

/// By start address.
static REGISTRY: LazyLock<RwLock<BTreeMap<usize, Registered>>> =
    LazyLock::new(|| RwLock::new(BTreeMap::new()));

/// How many ranges are registered: a write skips the lookup while there are none.
static REGISTERED: AtomicUsize = AtomicUsize::new(0);

/// A body's memory file, registered while this lives.
pub struct FileCopy {
    start: usize,
}

impl FileCopy {
    /// A copy of `body` in a memory file, or the one made already for the same bytes;
    /// `None` for a short body, when [`MOST_FILES`] are open, or when the file cannot be
    /// made (the body is then copied into sockets as before).
    pub fn of(body: &Bytes) -> Option<FileCopy> {
        if body.len() < MIN_LEN {
            return None;
        }
        let start = body.as_ptr() as usize;
        let mut registry = REGISTRY.write().ok()?;
        if let Some(known) = registry.get_mut(&start)
            && known.len == body.len()
        {
            known.copies += 1;
            return Some(FileCopy { start });
        }
        if registry.len() >= MOST_FILES || registry.contains_key(&start) {
            return None;
        }
        let file = memory_file(body)
            .inspect_err(|e| tracing::debug!(error = %e, "cannot make a memory file"))
            .ok()?;
        registry.insert(
            start,
            Registered {
                len: body.len(),
                file: Arc::new(file),
                copies: 1,
            },
        );
        REGISTERED.fetch_add(1, Ordering::Release);
        Some(FileCopy { start })
    }
}

impl Drop for FileCopy {
    fn drop(&mut self) {
        let Ok(mut registry) = REGISTRY.write() else {
            return;
        };
        if let Some(known) = registry.get_mut(&self.start) {
            known.copies -= 1;
            if known.copies == 0 {
                registry.remove(&self.start);
                REGISTERED.fetch_sub(1, Ordering::Release);
            }
        }
    }
}

/// The memory file holding the bytes at `slice`, and where in it they start, if a live
/// [`FileCopy`] covers them.
pub fn find(slice: &[u8]) -> Option<(Arc<File>, u64)> {
    if slice.is_empty() || REGISTERED.load(Ordering::Acquire) == 0 {
        return None;
    }
    let start = slice.as_ptr() as usize;
    let registry = REGISTRY.read().ok()?;
    let (&range_start, known) = registry.range(..=start).next_back()?;
    let offset = start - range_start;
    (offset + slice.len() <= known.len).then(|| (known.file.clone(), offset as u64))
}

fn memory_file(body: &[u8]) -> std::io::Result<File> {
    // SAFETY: a valid C string and flags; the result is checked before use.
    let fd = unsafe { libc::memfd_create(c"listings-body".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    let mut file = unsafe { File::from_raw_fd(fd) };
    file.write_all(body)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt as _;

    use super::*;

    fn read(file: &File, offset: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0; len];
        file.read_exact_at(&mut buf, offset)
            .expect("read the memory file");
        buf
    }

    #[test]
    fn a_registered_body_is_found_whole_and_in_part_until_its_last_copy_goes() {
        let body = Bytes::from(
            (0..MIN_LEN * 2)
                .map(|i| (i % 251) as u8)
                .collect::<Vec<_>>(),
        );
        let first = FileCopy::of(&body).expect("a long body is copied");
        let second = FileCopy::of(&body.clone()).expect("the same bytes share the copy");
        let (file, offset) = find(&body).expect("the whole body");
        assert_eq!((offset, read(&file, 0, body.len())), (0, body.to_vec()));
        let tail = &body[1000..];
        let (file, offset) = find(tail).expect("a part of it");
        assert_eq!(read(&file, offset, tail.len()), tail);
        assert!(find(&body[..0]).is_none());
        drop(first);
        assert!(find(&body).is_some(), "one copy is left");
        drop(second);
        assert!(find(&body).is_none(), "no copy is left");
    }

    #[test]
    fn short_bodies_and_other_memory_are_not_sent_from_files() {
        let short = Bytes::from(vec![7; MIN_LEN - 1]);
        assert!(FileCopy::of(&short).is_none());
        let body = Bytes::from(vec![1; MIN_LEN]);
        let _copy = FileCopy::of(&body).expect("copied");
        let elsewhere = vec![1; MIN_LEN];
        assert!(find(&elsewhere).is_none());
    }
}
