//! SQLite's change log (see the `row_changes` migration): every row a write changed, in
//! commit order, written by triggers whoever writes (this process, another, the
//! `sqlite3` shell). A server reads what follows the last entry it acted on, so that it
//! retires only what another process's commit changed. It reads on a connection of its
//! own: a commit must not wait behind the pages being loaded on the read connections.

use std::sync::{Arc, Mutex, PoisonError};

use diesel::sqlite::SqliteConnection;
use diesel::{ExpressionMethods as _, QueryDsl as _, RunQueryDsl as _};

use crate::config::DbSettings;
use crate::domain::{RowChange, RowFacts};
use crate::service::db::DbError;
use crate::service::db::connect;
use crate::service::db::schema::sqlite::listing_changes as log;

/// More entries than this since the last read retire everything: a bulk load changed
/// most pages anyway.
const MOST_ENTRIES_READ: i64 = 1000;

/// What followed an entry.
pub enum Followed {
    /// Every entry after it, in order (possibly none), and the last one's number.
    Entries { changes: Vec<RowChange>, last: i64 },
    /// Entries are missing (pruned before they were read) or too many: all that is
    /// known is the last one's number.
    TooMuch { last: i64 },
}

type Entry = (
    i64,
    Option<i64>,
    Option<String>,
    Option<bigdecimal::BigDecimal>,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<bigdecimal::BigDecimal>,
    Option<String>,
);

/// A reader of the change log, on its connection.
pub struct ChangeLog {
    conn: Arc<Mutex<SqliteConnection>>,
}

impl ChangeLog {
    pub fn open(path: &str, settings: &DbSettings) -> Result<ChangeLog, DbError> {
        let conn = connect::open_sqlite(path, settings)
            .map_err(|e| DbError::Unavailable(e.to_string()))?;
        Ok(ChangeLog {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// The number of the last entry (0 when there is none).
    pub async fn last(&self) -> Result<i64, DbError> {
        self.read(last_entry).await
    }

    /// The changes logged after entry `seen`.
    pub async fn after(&self, seen: i64) -> Result<Followed, DbError> {
        self.read(move |conn| {
            let entries: Vec<Entry> = log::table
                .filter(log::seq.gt(seen))
                .order(log::seq)
                .limit(MOST_ENTRIES_READ + 1)
                .load(conn)?;
            let last = entries.last().map_or(seen, |entry| entry.0);
            let contiguous = entries.first().is_none_or(|first| first.0 == seen + 1);
            if !contiguous || entries.len() as i64 > MOST_ENTRIES_READ {
                let last = last_entry(conn)?.max(last);
                return Ok(Followed::TooMuch { last });
            }
            let changes = entries.into_iter().map(change_of).collect();
            Ok(Followed::Entries { changes, last })
        })
        .await
    }

    /// `read` on the connection, on a blocking thread (one read at a time).
    async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&mut SqliteConnection) -> diesel::QueryResult<T> + Send + 'static,
    ) -> Result<T, DbError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
            read(&mut conn)
        })
        .await
        .map_err(|e| DbError::Unavailable(e.to_string()))?
        .map_err(DbError::from)
    }
}

fn last_entry(conn: &mut SqliteConnection) -> diesel::QueryResult<i64> {
    log::table
        .select(diesel::dsl::max(log::seq))
        .first::<Option<i64>>(conn)
        .map(|last| last.unwrap_or(0))
}

fn change_of(entry: Entry) -> RowChange {
    let (_, old_id, old_key, old_price, old_created, new_id, new_key, new_price, new_created) =
        entry;
    let facts = |id: Option<i64>, key, price: Option<bigdecimal::BigDecimal>| {
        id.map(|id| {
            RowFacts {
                id,
                location_key: key,
                price: price.unwrap_or_default(),
            }
            .normalized()
        })
    };
    let created_at_changed = old_id.is_some() && new_id.is_some() && old_created != new_created;
    RowChange {
        before: facts(old_id, old_key, old_price),
        after: facts(new_id, new_key, new_price),
        created_at_changed,
    }
}
