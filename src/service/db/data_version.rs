//! How a server on a SQLite file learns, before every cached read, that some process
//! (the CLI, a second server, this one) committed: without a system call or a lock.
//!
//! Every commit rewrites the header of the WAL index (its layout is part of SQLite's
//! documented file format); `PRAGMA data_version` reads the same header, behind two
//! `fcntl` calls, which cost a cached read a fifth of its time. The watch reads the
//! header itself, from SQLite's own mapping of it: a connection of its own, opened
//! through SQLite's API and kept open, hands out that mapping through the documented
//! file-control and VFS interfaces (`SQLITE_FCNTL_FILE_POINTER`, `xShmMap`). The watch
//! never opens, maps or closes SQLite's files itself: POSIX locks belong to the process
//! and all vanish when *any* descriptor of the file is closed, which once let another
//! process reset the WAL index under a server (SIGBUS). A writer rewrites the header's
//! second copy, then its first; the watch reads the first, then the second, as SQLite's
//! readers do, so a header being rewritten shows as two different copies and counts as
//! a change.

use std::ffi::{CString, c_int, c_void};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering, fence};

use anyhow::{Context as _, bail};
use libsqlite3_sys as ffi;

/// Two copies of the 48-byte `WalIndexHdr` open the WAL index.
const HEADER_BYTES: usize = 48;
/// The size of a WAL-index region, as SQLite maps them (`WALINDEX_PGSZ`).
const WAL_INDEX_REGION_BYTES: c_int = 32768;

pub struct CommitWatch {
    /// The first bytes of region 0 of the WAL index, in SQLite's mapping, valid while
    /// `connection` is open (SQLite unmaps it when its last connection to the file in
    /// this process closes).
    header: *const u8,
    /// The connection that keeps the mapping (and SQLite's shared lock on the WAL index)
    /// alive; it runs nothing after `open`.
    connection: *mut ffi::sqlite3,
    /// A hash of the header the cache was last retired for.
    acted_on: AtomicU64,
}

// SAFETY: `header` is only read, with volatile loads, and `connection` is only closed,
// in `drop`, when nothing else can use the watch. SQLite's default threading mode lets
// a connection be closed from any thread.
unsafe impl Send for CommitWatch {}
// SAFETY: as above: shared use only reads the header.
unsafe impl Sync for CommitWatch {}

/// A change [`CommitWatch::changed`] found; hand it back to
/// [`CommitWatch::acknowledge`] once the cache is retired.
pub struct Change(Option<u64>);

impl CommitWatch {
    /// Watches the SQLite file at `path`, which must be in WAL mode.
    pub fn open(path: &Path) -> anyhow::Result<CommitWatch> {
        let describe = || format!("cannot watch SQLite file {} for commits", path.display());
        let c_path = CString::new(path.as_os_str().as_encoded_bytes())
            .context("the SQLite path holds a NUL byte")?;
        let mut connection = std::ptr::null_mut();
        // SAFETY: a valid C string and out-pointer; the flags are SQLite's own.
        let rc = unsafe {
            ffi::sqlite3_open_v2(
                c_path.as_ptr(),
                &mut connection,
                ffi::SQLITE_OPEN_READWRITE,
                std::ptr::null(),
            )
        };
        // Closed by `drop` from here on, whatever fails next.
        let mut watch = CommitWatch {
            header: std::ptr::null(),
            connection,
            acted_on: AtomicU64::new(0),
        };
        if rc != ffi::SQLITE_OK {
            bail!("{}: {}", describe(), watch.error_message());
        }
        // A read opens the WAL and maps its index; a long busy wait is not needed.
        watch
            .execute(c"PRAGMA busy_timeout = 100; SELECT count(*) FROM sqlite_master;")
            .with_context(describe)?;
        watch.header = watch.map_wal_index().with_context(describe)?;
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
        let mut copies = [[0u8; HEADER_BYTES]; 2];
        for (copy, offset) in copies.iter_mut().zip([0, HEADER_BYTES]) {
            for (i, byte) in copy.iter_mut().enumerate() {
                // SAFETY: `offset + i` < 2 * HEADER_BYTES, within the mapped region,
                // which stays mapped while `self.connection` is open.
                *byte = unsafe { std::ptr::read_volatile(self.header.add(offset + i)) };
            }
            fence(Ordering::SeqCst);
        }
        (copies[0] == copies[1]).then(|| crate::stable_hash::fnv1a64(&copies[0]))
    }

    fn execute(&self, sql: &std::ffi::CStr) -> anyhow::Result<()> {
        // SAFETY: an open connection and a valid C string; no callback.
        let rc = unsafe {
            ffi::sqlite3_exec(
                self.connection,
                sql.as_ptr(),
                None,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        if rc != ffi::SQLITE_OK {
            bail!("{}", self.error_message());
        }
        Ok(())
    }

    /// SQLite's mapping of the WAL index's first region, through the main database
    /// file's VFS methods (the mapping SQLite's own readers use).
    fn map_wal_index(&self) -> anyhow::Result<*const u8> {
        let mut file: *mut ffi::sqlite3_file = std::ptr::null_mut();
        // SAFETY: an open connection; FILE_POINTER writes a `sqlite3_file*`.
        let rc = unsafe {
            ffi::sqlite3_file_control(
                self.connection,
                c"main".as_ptr(),
                ffi::SQLITE_FCNTL_FILE_POINTER,
                (&raw mut file).cast::<c_void>(),
            )
        };
        if rc != ffi::SQLITE_OK || file.is_null() {
            bail!("SQLite did not hand out its database file ({rc})");
        }
        // SAFETY: `file` is the connection's open main database file.
        let methods = unsafe { (*file).pMethods };
        // SAFETY: an open file's methods stay valid while it is open.
        let shm_map = (!methods.is_null())
            .then(|| unsafe { ((*methods).iVersion >= 2).then_some((*methods).xShmMap) })
            .flatten()
            .flatten()
            .context("the SQLite file has no shared-memory WAL index (is it in WAL mode?)")?;
        let mut region: *mut c_void = std::ptr::null_mut();
        // SAFETY: region 0 at SQLite's region size, never extended; SQLite keeps the
        // mapping until the connection's WAL closes.
        let rc = unsafe { shm_map(file, 0, WAL_INDEX_REGION_BYTES, 0, &mut region) };
        if rc != ffi::SQLITE_OK || region.is_null() {
            bail!("the WAL index is not mapped ({rc}); is the file in WAL mode?");
        }
        Ok(region.cast::<u8>().cast_const())
    }

    fn error_message(&self) -> String {
        if self.connection.is_null() {
            return "out of memory".to_owned();
        }
        // SAFETY: SQLite returns a NUL-terminated message owned by the connection.
        unsafe { std::ffi::CStr::from_ptr(ffi::sqlite3_errmsg(self.connection)) }
            .to_string_lossy()
            .into_owned()
    }
}

impl Drop for CommitWatch {
    fn drop(&mut self) {
        // SAFETY: the connection was opened by `open` and is closed once, here; after
        // this the header is never read (the watch is gone).
        unsafe {
            ffi::sqlite3_close(self.connection);
        }
    }
}

#[cfg(test)]
mod tests {
    use diesel::Connection as _;
    use diesel::connection::SimpleConnection as _;

    use super::*;
    use crate::service::db::{DbSettings, connect};

    const FILE: &str = "watched.sqlite3";

    /// A fresh SQLite file with a table, a connection that writes to it, and its watch.
    fn watched_file() -> (tempfile::TempDir, diesel::SqliteConnection, CommitWatch) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let mut writer =
            connect::open_sqlite(path.to_str().unwrap(), &DbSettings::default()).expect("open");
        writer
            .batch_execute("CREATE TABLE t (x INTEGER)")
            .expect("create");
        let watch = CommitWatch::open(&path).expect("watch");
        (dir, writer, watch)
    }

    #[test]
    fn another_connections_commit_is_seen_once_acknowledged() {
        let (_dir, mut writer, watch) = watched_file();
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

    /// Every commit is seen, across checkpoints that restart or truncate the WAL (each
    /// rewrites the header with new salts).
    #[test]
    fn commits_are_seen_across_checkpoints() {
        let (_dir, mut writer, watch) = watched_file();
        for i in 0..300 {
            writer
                .batch_execute(&format!("INSERT INTO t VALUES ({i})"))
                .expect("insert");
            let change = watch
                .changed()
                .unwrap_or_else(|| panic!("commit {i} unseen"));
            watch.acknowledge(change);
            assert!(watch.changed().is_none());
            if i % 7 == 0 {
                let mode = if i % 2 == 0 { "TRUNCATE" } else { "RESTART" };
                writer
                    .batch_execute(&format!("PRAGMA wal_checkpoint({mode})"))
                    .expect("checkpoint");
                if let Some(change) = watch.changed() {
                    watch.acknowledge(change);
                }
            }
        }
    }

    /// The watch holds SQLite's shared lock on the WAL index like any connection, and
    /// keeps it: nothing of this process closes a descriptor of SQLite's files.
    #[test]
    fn the_process_keeps_sqlites_lock_on_the_wal_index() {
        let (dir, writer, watch) = watched_file();
        drop(writer);
        let path = dir.path().join(FILE);
        for _ in 0..3 {
            let _ = watch.changed();
        }
        let shm = std::fs::metadata(format!("{}-shm", path.display())).expect("-shm exists");
        let inode = std::os::unix::fs::MetadataExt::ino(&shm);
        let locks = std::fs::read_to_string("/proc/locks").expect("/proc/locks");
        let pid = std::process::id().to_string();
        let held = locks.lines().any(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // "1: POSIX  ADVISORY  READ 1234 08:01:5678 128 128"
            fields.len() >= 6
                && fields[1] == "POSIX"
                && fields[4] == pid
                && fields[5].rsplit(':').next() == Some(&inode.to_string())
        });
        assert!(
            held,
            "no POSIX lock of this process on {}-shm:\n{locks}",
            path.display()
        );
    }
}
