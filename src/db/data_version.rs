//! How an embedded (SQLite) server learns that another process committed: SQLite's
//! `PRAGMA data_version` changes whenever another connection commits to the file. The
//! probe reads a counter from the WAL index in shared memory, so it is cheap enough to
//! run before every cached read.

use std::path::Path;

use anyhow::Context as _;
use diesel::sql_types::BigInt;
use diesel::{QueryableByName, RunQueryDsl as _, SqliteConnection};

use crate::db::{DbSettings, connect};

pub struct DataVersionProbe {
    conn: SqliteConnection,
    last_seen: i64,
}

#[derive(QueryableByName)]
struct DataVersion {
    #[diesel(sql_type = BigInt)]
    data_version: i64,
}

fn read_version(conn: &mut SqliteConnection) -> diesel::QueryResult<i64> {
    diesel::sql_query("PRAGMA data_version")
        .get_result::<DataVersion>(conn)
        .map(|row| row.data_version)
}

impl DataVersionProbe {
    pub fn open(path: &Path, settings: &DbSettings) -> anyhow::Result<Self> {
        let path_str = path
            .to_str()
            .context("the SQLite path is not valid UTF-8")?;
        let mut conn = connect::open_sqlite(path_str, settings)
            .with_context(|| format!("cannot open SQLite file {}", path.display()))?;
        let last_seen = read_version(&mut conn).context("cannot read PRAGMA data_version")?;
        Ok(DataVersionProbe { conn, last_seen })
    }

    /// True when some other connection committed since the last call. Errors count as a
    /// change: invalidating once too often is safe, missing a write is not.
    pub fn changed_since_last_check(&mut self) -> bool {
        match read_version(&mut self.conn) {
            Ok(version) if version == self.last_seen => false,
            Ok(version) => {
                self.last_seen = version;
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read SQLite data_version; treating it as changed");
                true
            }
        }
    }
}
