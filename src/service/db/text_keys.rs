//! Recomputing the stored text keys (`location_key`, `title_key`, `description_key`)
//! by the application's one rule ([`match_key`]). Every write of the application sets
//! them; this pass is for the rows that got another rule's keys: the rows already
//! there when the rule changed (a migration leaves `text_keys_pending` on PostgreSQL,
//! whose SQL cannot fold case fully), and rows written by other programs (the
//! triggers' `lower()`), when the operator asks (`listings migrate --rekey`).
//!
//! It runs under the migration lock, on the migration's connection. A row is updated
//! only while its texts are still the ones its keys were computed from, so a write
//! that lands meanwhile keeps the keys it set. The updates are ordinary writes: the
//! triggers count them and tell the running servers, whose caches retire what the
//! new keys change.

use diesel::prelude::*;

use crate::domain::text::match_key;

/// Rows read per round trip.
const BATCH: i64 = 2_000;

/// One row's texts and the keys stored for them.
type KeyedRow = (
    i64,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
);

macro_rules! rekey_pass {
    ($name:ident, $conn:ty, $schema:ident) => {
        /// Recomputes every row's keys where they differ from the rule; returns how
        /// many rows changed.
        pub fn $name(conn: &mut $conn) -> QueryResult<usize> {
            use crate::service::db::schema::$schema::properties as p;
            let mut after = 0_i64;
            let mut changed = 0;
            loop {
                let rows: Vec<KeyedRow> = p::table
                    .filter(p::id.gt(after))
                    .order(p::id)
                    .limit(BATCH)
                    .select((
                        p::id,
                        p::title,
                        p::description,
                        p::location,
                        p::location_key.nullable(),
                        p::title_key.nullable(),
                        p::description_key.nullable(),
                    ))
                    .load(conn)?;
                let Some(last) = rows.last() else {
                    return Ok(changed);
                };
                after = last.0;
                for (id, title, description, location, location_key, title_key, description_key) in
                    rows
                {
                    let keys = (
                        match_key(&location),
                        match_key(&title),
                        match_key(&description),
                    );
                    if (
                        location_key.as_ref(),
                        title_key.as_ref(),
                        description_key.as_ref(),
                    ) == (Some(&keys.0), Some(&keys.1), Some(&keys.2))
                    {
                        continue;
                    }
                    changed += diesel::update(
                        p::table
                            .filter(p::id.eq(id))
                            .filter(p::location.eq(&location))
                            .filter(p::title.eq(&title))
                            .filter(p::description.eq(&description)),
                    )
                    .set((
                        p::location_key.eq(&keys.0),
                        p::title_key.eq(&keys.1),
                        p::description_key.eq(&keys.2),
                    ))
                    .execute(conn)?;
                }
            }
        }
    };
}

type PgMigrationConn =
    diesel_async::async_connection_wrapper::AsyncConnectionWrapper<diesel_async::AsyncPgConnection>;

rekey_pass!(rekey_postgres, PgMigrationConn, pg);
rekey_pass!(rekey_sqlite, diesel::SqliteConnection, sqlite);

/// The pass a migration left pending on PostgreSQL, if it did: the rows it changed.
pub fn finish_pending_postgres(conn: &mut PgMigrationConn) -> QueryResult<Option<usize>> {
    #[derive(QueryableByName)]
    struct Pending {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        pending: bool,
    }
    let answer: Pending =
        diesel::sql_query("SELECT EXISTS (SELECT 1 FROM text_keys_pending) AS pending")
            .get_result(conn)?;
    if !answer.pending {
        return Ok(None);
    }
    let changed = rekey_postgres(conn)?;
    diesel::sql_query("DELETE FROM text_keys_pending").execute(conn)?;
    // The migration rewrote every row: index-only scans (counts, filtered pages) need
    // the visibility map back.
    diesel::sql_query("VACUUM (ANALYZE) properties").execute(conn)?;
    Ok(Some(changed))
}
