//! SQLite's change log (see the `row_changes` migration): every row a write changed, in
//! commit order, written by triggers whoever writes (this process, another, the
//! `sqlite3` shell). A server reads what follows the last entry it acted on, so that it
//! retires only what another process's commit changed.

use diesel::{ExpressionMethods as _, QueryDsl as _};
use diesel_async::RunQueryDsl as _;

use crate::domain::{RowChange, RowFacts};
use crate::service::db::schema::sqlite::listing_changes as log;
use crate::service::db::{Db, DbError, Pools};

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

impl Db {
    /// The number of the last entry of the change log (0 when there is none); 0 on
    /// PostgreSQL, which has no such log.
    pub async fn last_change(&self) -> Result<i64, DbError> {
        let Pools::Sqlite { read, .. } = &self.pools else {
            return Ok(0);
        };
        let db = self;
        crate::service::db::dispatch::dispatch!(@sqlite_read db, read, |conn| {
            log::table
                .select(diesel::dsl::max(log::seq))
                .first::<Option<i64>>(conn)
                .await
                .map(|last| last.unwrap_or(0))
        })
    }

    /// The changes logged after entry `seen`.
    pub async fn changes_after(&self, seen: i64) -> Result<Followed, DbError> {
        let Pools::Sqlite { read, .. } = &self.pools else {
            return Ok(Followed::Entries {
                changes: Vec::new(),
                last: seen,
            });
        };
        let db = self;
        let entries: Vec<Entry> = crate::service::db::dispatch::dispatch!(@sqlite_read db, read, |conn| {
            log::table
                .filter(log::seq.gt(seen))
                .order(log::seq)
                .limit(MOST_ENTRIES_READ + 1)
                .load::<Entry>(conn)
                .await
        })?;
        let last = entries.last().map_or(seen, |entry| entry.0);
        // Slices' own `first`, not diesel's.
        let contiguous = <[Entry]>::first(&entries).is_none_or(|first| first.0 == seen + 1);
        if !contiguous || entries.len() as i64 > MOST_ENTRIES_READ {
            let last = self.last_change().await?.max(last);
            return Ok(Followed::TooMuch { last });
        }
        let changes = entries.into_iter().map(change_of).collect();
        Ok(Followed::Entries { changes, last })
    }
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
