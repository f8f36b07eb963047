//! How a server on a SQLite file learns, before every cached read, that another process
//! (the CLI, a second server) committed: without a system call, a lock, or a queue.
//!
//! In WAL mode every commit rewrites the header of the WAL index (`<file>-shm`, shared
//! memory that SQLite's own readers consult; its layout is part of SQLite's documented
//! file format). The watch maps that header read-only and compares it with the one it
//! last acted on. A writer updates the header's second copy, then its first; the watch
//! reads the first, then the second, so a header being rewritten shows as two different
//! copies and counts as a change. `PRAGMA data_version` reads the same header, behind
//! two file locks.

use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering, fence};

use anyhow::Context as _;
use diesel::SqliteConnection;
use diesel::connection::SimpleConnection as _;

use crate::db::{DbSettings, connect};

/// Two copies of the 48-byte `WalIndexHdr` open the WAL index.
const HEADER_BYTES: usize = 48;

pub struct CommitWatch {
    index: memmap2::Mmap,
    /// A hash of the header the cache was last retired for.
    acted_on: AtomicU64,
    /// While a connection of this process is open, no other process deletes the WAL
    /// index (SQLite removes it only when its last user anywhere closes). Never used,
    /// so never locked: the mutex only makes the watch shareable.
    _holds_the_index: std::sync::Mutex<SqliteConnection>,
}

/// A change [`CommitWatch::changed`] found; hand it back to
/// [`CommitWatch::acknowledge`] once the cache is retired.
pub struct Change(Option<u64>);

impl CommitWatch {
    pub fn open(path: &Path, settings: &DbSettings) -> anyhow::Result<CommitWatch> {
        let path_str = path
            .to_str()
            .context("the SQLite path is not valid UTF-8")?;
        let mut conn = connect::open_sqlite(path_str, settings)
            .with_context(|| format!("cannot open SQLite file {}", path.display()))?;
        // A read makes sure the WAL index exists.
        conn.batch_execute("SELECT count(*) FROM sqlite_master")
            .context("cannot read the SQLite file")?;
        let index_path = format!("{path_str}-shm");
        let index = File::open(&index_path)
            .with_context(|| format!("cannot open the WAL index {index_path}"))?;
        // SAFETY: a read-only, shared mapping of SQLite's shared-memory file. Other
        // processes write it while it is mapped; it is only read through raw pointers
        // with volatile loads (never through references), so no reference asserts that
        // the bytes do not change.
        let map = unsafe {
            memmap2::MmapOptions::new()
                .len(2 * HEADER_BYTES)
                .map(&index)
        }
        .with_context(|| format!("cannot map the WAL index {index_path}"))?;
        let watch = CommitWatch {
            index: map,
            acted_on: AtomicU64::new(0),
            _holds_the_index: std::sync::Mutex::new(conn),
        };
        if let Some(hash) = watch.header_hash() {
            watch.acted_on.store(hash, Ordering::Release);
        }
        Ok(watch)
    }

    /// `Some` when some process committed since the cache was last retired for a commit
    /// (or is committing right now). Costs two reads of shared memory.
    pub fn changed(&self) -> Option<Change> {
        match self.header_hash() {
            Some(hash) if hash == self.acted_on.load(Ordering::Acquire) => None,
            seen => Some(Change(seen)),
        }
    }

    /// Records that the cache was retired for `change`. Until then every caller of
    /// [`CommitWatch::changed`] still sees the change, so none can read the cache
    /// before it is retired.
    pub fn acknowledge(&self, change: Change) {
        if let Some(hash) = change.0 {
            self.acted_on.store(hash, Ordering::Release);
        }
    }

    /// The header's hash, or `None` while a writer is between its two copies.
    fn header_hash(&self) -> Option<u64> {
        let base = self.index.as_ptr();
        let mut copies = [[0u8; HEADER_BYTES]; 2];
        for (copy, offset) in copies.iter_mut().zip([0, HEADER_BYTES]) {
            for (i, byte) in copy.iter_mut().enumerate() {
                // SAFETY: `offset + i` < 2 * HEADER_BYTES, the mapped length.
                *byte = unsafe { std::ptr::read_volatile(base.add(offset + i)) };
            }
            fence(Ordering::Acquire);
        }
        (copies[0] == copies[1]).then(|| crate::cache::fnv1a64(&copies[0]))
    }
}

#[cfg(test)]
mod tests {
    use diesel::Connection as _;

    use super::*;

    #[test]
    fn another_connections_commit_is_seen_once_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("watched.sqlite3");
        let settings = DbSettings::default();
        let mut writer = connect::open_sqlite(path.to_str().unwrap(), &settings).expect("open");
        writer
            .batch_execute("CREATE TABLE t (x INTEGER)")
            .expect("create");
        let watch = CommitWatch::open(&path, &settings).expect("watch");
        assert!(watch.changed().is_none(), "nothing since it opened");

        writer
            .batch_execute("INSERT INTO t VALUES (1)")
            .expect("insert");
        let change = watch.changed().expect("a commit by another connection");
        assert!(
            watch.changed().is_some(),
            "still a change until acknowledged"
        );
        watch.acknowledge(change);
        assert!(watch.changed().is_none());

        writer
            .transaction::<_, diesel::result::Error, _>(|conn| {
                conn.batch_execute("INSERT INTO t VALUES (2)")?;
                assert!(watch.changed().is_none(), "not committed yet");
                Ok(())
            })
            .expect("transaction");
        assert!(watch.changed().is_some(), "committed");
    }
}
