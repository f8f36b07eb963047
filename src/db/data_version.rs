//! How a server on a SQLite file learns, before every cached read, that some process
//! (the CLI, a second server, this one) committed: `PRAGMA data_version` on a connection
//! of its own that never writes, so every commit by anyone changes the number it reads.
//!
//! Only SQLite's API touches SQLite's files. SQLite's locks are POSIX advisory locks,
//! which belong to the process and all vanish when *any* descriptor of the file is
//! closed; a probe that opened or mapped `-shm` itself dropped the locks this process's
//! connections relied on, and another process then reset the WAL index under them
//! (SIGBUS) or wrote beside them.
//!
//! One probe costs a read transaction's start and end (microseconds, no fsync).
//! Requests arriving while a probe runs share the next one instead of queueing a probe
//! each: a probe that *began* after a request arrived answers for it.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use diesel::sql_types::BigInt;
use diesel::{QueryableByName, RunQueryDsl as _, SqliteConnection};

use crate::db::{DbSettings, connect};

/// The probe never waits long for a lock (a WAL recovery by another process): a probe
/// that cannot answer counts as a change, which is always safe.
const PROBE_BUSY_TIMEOUT: Duration = Duration::from_millis(100);

pub struct CommitWatch {
    probe: Mutex<Probe>,
    /// Probes begun so far; a probe's number is this count when it began.
    begun: AtomicU64,
    /// The data version the cache was last retired for.
    acted_on: AtomicU64,
}

struct Probe {
    conn: SqliteConnection,
    /// The number of the last probe that finished, and what it read.
    last: (u64, Option<u64>),
}

/// A change [`CommitWatch::changed`] found; hand it back to
/// [`CommitWatch::acknowledge`] once the cache is retired.
pub struct Change(Option<u64>);

#[derive(QueryableByName)]
struct DataVersion {
    #[diesel(sql_type = BigInt)]
    data_version: i64,
}

impl CommitWatch {
    pub fn open(path: &Path, settings: &DbSettings) -> anyhow::Result<CommitWatch> {
        let path_str = path
            .to_str()
            .context("the SQLite path is not valid UTF-8")?;
        let probe_settings = DbSettings {
            statement_timeout: PROBE_BUSY_TIMEOUT,
            ..*settings
        };
        let conn = connect::open_sqlite(path_str, &probe_settings)
            .with_context(|| format!("cannot open SQLite file {}", path.display()))?;
        let mut probe = Probe {
            conn,
            last: (0, None),
        };
        let first = probe
            .read()
            .with_context(|| format!("cannot read SQLite file {}", path.display()))?;
        probe.last = (0, Some(first));
        Ok(CommitWatch {
            probe: Mutex::new(probe),
            begun: AtomicU64::new(0),
            acted_on: AtomicU64::new(first),
        })
    }

    /// `Some` when some process committed since the cache was last retired for a commit
    /// (or the probe could not tell).
    pub fn changed(&self) -> Option<Change> {
        match self.current() {
            Some(version) if version == self.acted_on.load(Ordering::Acquire) => None,
            seen => Some(Change(seen)),
        }
    }

    /// Records that the cache was retired for `change`. Until then every caller of
    /// [`CommitWatch::changed`] still sees the change, so none can read the cache
    /// before it is retired.
    pub fn acknowledge(&self, change: Change) {
        if let Some(version) = change.0 {
            self.acted_on.store(version, Ordering::Release);
        }
    }

    /// The data version as of a moment after this call began; `None` if unreadable.
    fn current(&self) -> Option<u64> {
        let arrived_after = self.begun.load(Ordering::Acquire);
        let mut probe = self.probe.lock().unwrap_or_else(PoisonError::into_inner);
        let (number, seen) = probe.last;
        if number > arrived_after {
            return seen;
        }
        let number = self.begun.fetch_add(1, Ordering::AcqRel) + 1;
        let seen = match probe.read() {
            Ok(version) => Some(version),
            Err(e) => {
                tracing::debug!(error = %e, "PRAGMA data_version failed; treating it as a change");
                None
            }
        };
        probe.last = (number, seen);
        seen
    }
}

impl Probe {
    fn read(&mut self) -> diesel::QueryResult<u64> {
        let row: DataVersion =
            diesel::sql_query("PRAGMA data_version").get_result(&mut self.conn)?;
        Ok(row.data_version.cast_unsigned())
    }
}

#[cfg(test)]
mod tests {
    use diesel::Connection as _;
    use diesel::connection::SimpleConnection as _;

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

    /// The probe holds SQLite's shared lock on the WAL index like any connection, and
    /// keeps it: nothing of this process closes a descriptor of SQLite's files.
    #[test]
    fn the_process_keeps_sqlites_lock_on_the_wal_index() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("locked.sqlite3");
        let settings = DbSettings::default();
        let mut writer = connect::open_sqlite(path.to_str().unwrap(), &settings).expect("open");
        writer
            .batch_execute("CREATE TABLE t (x INTEGER)")
            .expect("create");
        drop(writer);
        let watch = CommitWatch::open(&path, &settings).expect("watch");
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
