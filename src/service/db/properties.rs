//! The `properties` repository, written once and expanded per backend (see `db::pg` and
//! `db::sqlite`), and the [`Db`] methods that run it: each picks the backend, takes a
//! connection, runs the body inside the transaction it needs and the deadline of
//! `db::DbSettings`. Prices are normalized on every read (SQLite floats).

/// The insertable columns of one `NewProperty`, against either backend's table `$p`.
macro_rules! property_values {
    ($p:ident, $new:expr) => {
        (
            $p::title.eq(&$new.title),
            $p::description.eq(&$new.description),
            $p::price.eq(&$new.price),
            $p::location.eq(&$new.location),
            $p::location_key.eq(crate::domain::text::match_key(&$new.location)),
        )
    };
}

macro_rules! property_repository {
    ($conn:ty, $backend:ty, $schema:ident, $insert_batch:path) => {
        pub mod properties {
            use diesel::prelude::*;
            use diesel_async::RunQueryDsl;

            use crate::domain::Property;
            use crate::domain::{NewProperty, PropertyChanges, PropertyQuery, SortOrder};
            use crate::service::db::lower;
            use crate::service::db::schema::$schema::properties as p;

            type Conn = $conn;

            /// The columns of [`Property`], in its order (the table has more).
            #[rustfmt::skip]
            type Columns = (p::id, p::title, p::description, p::price, p::location, p::created_at);
            #[rustfmt::skip]
            const PROPERTY: Columns =
                (p::id, p::title, p::description, p::price, p::location, p::created_at);

            /// The rows matching the query's filters, in no particular order. A location
            /// filter arrives as its match key and is compared with the stored one
            /// (indexed); the search filter with `lower(column)`.
            fn matching(query: &PropertyQuery) -> p::BoxedQuery<'_, $backend> {
                let mut rows = p::table.into_boxed();
                if let Some(location) = &query.location {
                    rows = rows.filter(p::location_key.eq(location));
                }
                if let Some(min) = &query.min_price {
                    rows = rows.filter(p::price.ge(min));
                }
                if let Some(max) = &query.max_price {
                    rows = rows.filter(p::price.le(max));
                }
                if let Some(search) = &query.search {
                    let pattern = format!("%{}%", escape_like(search));
                    rows = rows.filter(
                        lower(p::title).like(pattern.clone()).escape('\\').or(lower(
                            p::description,
                        )
                        .like(pattern)
                        .escape('\\')),
                    );
                }
                rows
            }

            /// LIKE wildcards in user input match themselves.
            fn escape_like(text: &str) -> String {
                text.replace('\\', "\\\\")
                    .replace('%', "\\%")
                    .replace('_', "\\_")
            }

            /// One page of the matching rows. Ties in the sort column are broken by id,
            /// in the same direction. Run it and [`count_matches`] in one read
            /// transaction, so that the page and the count agree.
            pub async fn page_rows(
                conn: &mut Conn,
                query: &PropertyQuery,
            ) -> QueryResult<Vec<Property>> {
                let ordered = match query.ordering {
                    SortOrder::PriceAsc => matching(query).order((p::price.asc(), p::id.asc())),
                    SortOrder::PriceDesc => matching(query).order((p::price.desc(), p::id.desc())),
                    SortOrder::CreatedAtAsc => {
                        matching(query).order((p::created_at.asc(), p::id.asc()))
                    }
                    SortOrder::CreatedAtDesc => {
                        matching(query).order((p::created_at.desc(), p::id.desc()))
                    }
                    SortOrder::IdAsc => matching(query).order(p::id.asc()),
                    SortOrder::IdDesc => matching(query).order(p::id.desc()),
                };
                let rows: Vec<Property> = ordered
                    .select(PROPERTY)
                    .limit(i64::from(query.page_size))
                    .offset(query.offset())
                    .load(conn)
                    .await?;
                Ok(rows.into_iter().map(Property::normalized).collect())
            }

            /// How many rows match in all. A separate count is cheaper than
            /// `COUNT(*) OVER ()`, which must materialize every matching row instead of
            /// walking the price index for one page (measured with bench/run).
            pub async fn count_matches(conn: &mut Conn, query: &PropertyQuery) -> QueryResult<i64> {
                matching(query).count().get_result(conn).await
            }

            pub async fn find(conn: &mut Conn, property_id: i64) -> QueryResult<Property> {
                let row: Property = p::table
                    .find(property_id)
                    .select(PROPERTY)
                    .first(conn)
                    .await?;
                Ok(row.normalized())
            }

            pub async fn insert(conn: &mut Conn, new: &NewProperty) -> QueryResult<Property> {
                let row: Property = diesel::insert_into(p::table)
                    .values(crate::service::db::properties::property_values!(p, new))
                    .returning(PROPERTY)
                    .get_result(conn)
                    .await?;
                Ok(row.normalized())
            }

            /// Inserts many rows in one statement (see `db::bulk`); returns how many.
            pub use $insert_batch as insert_batch;

            /// Changes the given fields; `NotFound` when there is no such row.
            pub async fn update(
                conn: &mut Conn,
                property_id: i64,
                changes: &PropertyChanges,
            ) -> QueryResult<Property> {
                let row: Property = diesel::update(p::table.find(property_id))
                    .set((
                        changes.title.as_ref().map(|v| p::title.eq(v)),
                        changes.description.as_ref().map(|v| p::description.eq(v)),
                        changes.price.as_ref().map(|v| p::price.eq(v)),
                        changes.location.as_ref().map(|v| p::location.eq(v)),
                        changes
                            .location
                            .as_deref()
                            .map(|v| p::location_key.eq(crate::domain::text::match_key(v))),
                    ))
                    .returning(PROPERTY)
                    .get_result(conn)
                    .await?;
                Ok(row.normalized())
            }

            /// True when a row was deleted.
            pub async fn delete(conn: &mut Conn, property_id: i64) -> QueryResult<bool> {
                let deleted = diesel::delete(p::table.find(property_id))
                    .execute(conn)
                    .await?;
                Ok(deleted > 0)
            }
        }
    };
}

pub(crate) use {property_repository, property_values};

/// Multi-row inserts, which diesel-async's SQLite wrapper cannot express generically:
/// SQLite's batch insert runs on the wrapped synchronous connection instead.
pub mod bulk {
    use diesel::{ExpressionMethods as _, QueryResult};
    use diesel_async::{AsyncPgConnection, RunQueryDsl as _};

    use crate::domain::NewProperty;
    use crate::service::db::SqliteConn;
    use crate::service::db::schema;

    pub async fn pg_insert_batch(
        conn: &mut AsyncPgConnection,
        rows: Vec<NewProperty>,
    ) -> QueryResult<usize> {
        use schema::pg::properties as p;
        let values: Vec<_> = rows.iter().map(|new| property_values!(p, new)).collect();
        diesel::insert_into(p::table)
            .values(values)
            .execute(conn)
            .await
    }

    pub async fn sqlite_insert_batch(
        conn: &mut SqliteConn,
        rows: Vec<NewProperty>,
    ) -> QueryResult<usize> {
        use schema::sqlite::properties as p;
        conn.spawn_blocking(move |conn| {
            let values: Vec<_> = rows.iter().map(|new| property_values!(p, new)).collect();
            diesel::RunQueryDsl::execute(diesel::insert_into(p::table).values(values), conn)
        })
        .await
    }
}

/// PostgreSQL: runs `$body` on a pooled connection inside a transaction that remembers
/// its id, within the statement deadline. Evaluates to the body's result, or to the
/// deadline's error: `Timeout` when the COMMIT was never sent (the server rolls back
/// when the dropped connection reaches it), `OutcomeUnknown` when it may have been, in
/// which case `write_fate` learns later what happened and tells every server.
macro_rules! pg_write {
    ($db:expr, $pool:expr, $config:expr, $error:ty, |$tx:ident, $heartbeat:ident| $body:expr) => {{
        let mut conn = crate::service::db::checkout($pool, &$db.settings).await?;
        let $heartbeat = crate::service::db::Heartbeat::default();
        let committing = std::sync::OnceLock::<String>::new();
        let work = conn.transaction::<_, $error, _>(async |$tx| {
            let xid = crate::service::db::write_fate::current_transaction($tx).await?;
            let value = $body?;
            let _ = committing.set(xid);
            crate::test_hooks::pause!($db.hooks, BeforeCommit);
            Ok(value)
        });
        match crate::service::db::within_deadline!($db, conn, $heartbeat, work) {
            Ok(result) => result,
            Err(limit) => Err(match committing.into_inner() {
                Some(xid) => {
                    $db.learn_fate_later(&$config, xid);
                    DbError::OutcomeUnknown(limit).into()
                }
                None => DbError::Timeout(limit).into(),
            }),
        }
    }};
}

/// PostgreSQL: runs `$body` on a pooled connection within the statement deadline.
macro_rules! pg_read {
    ($db:expr, $pool:expr, |$conn:ident| $body:expr) => {{
        let mut conn = crate::service::db::checkout($pool, &$db.settings).await?;
        let heartbeat = crate::service::db::Heartbeat::default();
        let work = async {
            let $conn = &mut *conn;
            $body
        };
        match crate::service::db::within_deadline!($db, conn, heartbeat, work) {
            Ok(result) => result.map_err(DbError::from),
            Err(limit) => Err(DbError::Timeout(limit)),
        }
    }};
}

/// SQLite: runs `$body` on a read connection in a task of its own, awaited within the
/// pool and statement timeouts. diesel-async's SQLite wrapper cannot be stopped midway:
/// dropping its future blocks the thread until SQLite's statement is done, and panics
/// on a single-threaded runtime, which left a connection that panicked on its next use.
/// So a request that goes away, or gives up at its deadline, leaves its read to finish
/// in the task, which then puts the connection back. `$body` owns what it uses.
macro_rules! sqlite_read {
    ($db:expr, $pool:expr, move |$conn:ident| $body:expr) => {{
        let pool = $pool.clone();
        let settings = $db.settings;
        let read = tokio::spawn(tracing::Instrument::in_current_span(async move {
            on_connection!(settings, &pool, |$conn| $body).map_err(DbError::from)
        }));
        crate::service::db::await_sqlite_read(read, &settings).await
    }};
}

/// Runs `$body` on a connection of `$pool`, which goes back to the pool once `$body`
/// has run to its end (see `db::Checkout`).
macro_rules! on_connection {
    ($settings:expr, $pool:expr, |$conn:ident| $body:expr) => {{
        let mut pooled = crate::service::db::checkout($pool, &$settings).await?;
        let $conn = &mut *pooled;
        let done = $body;
        pooled.finish();
        done
    }};
}

/// SQLite: runs `$body` on the write connection. Its wait for the file's write lock is
/// bounded by the busy timeout; a deadline could abandon a write that then commits
/// unannounced, so there is none.
macro_rules! sqlite_write {
    ($db:expr, $pool:expr, |$conn:ident| $body:expr) => {
        on_connection!($db.settings, $pool, |$conn| $body)
    };
}

/// A write, written once for both backends: `$repo` names the backend's repository and
/// `$tx` a connection inside the write's transaction; `$heartbeat` restarts the
/// statement deadline (an import ticks after each batch). `$body` evaluates to a
/// `Result` whose error converts into `$error`.
macro_rules! write_on_either {
    ($db:expr, $error:ty, |$tx:ident, $repo:ident, $heartbeat:ident| $body:expr) => {
        match &$db.pools {
            Pools::Pg { pool, config } => {
                use pg::properties as $repo;
                pg_write!($db, pool, config, $error, |$tx, $heartbeat| $body)
            }
            Pools::Sqlite { write, .. } => {
                use sqlite::properties as $repo;
                let $heartbeat = crate::service::db::Heartbeat::default();
                sqlite_write!($db, write, |conn| {
                    conn.transaction::<_, $error, _>(async |$tx| Ok($body?))
                        .await
                })
            }
        }
    };
}

mod methods {
    use diesel_async::AsyncConnection as _;

    use super::super::{Db, DbError, Pools, pg, sqlite};
    use crate::domain::{NewProperty, PropertyChanges, PropertyQuery};
    use crate::domain::{Property, PropertyPage};

    impl Db {
        /// One page of a search and the number of matches, from one snapshot: a read-only
        /// REPEATABLE READ transaction on PostgreSQL, one read transaction on SQLite.
        pub async fn list_page(&self, query: &PropertyQuery) -> Result<PropertyPage, DbError> {
            match &self.pools {
                Pools::Pg { pool, .. } => pg_read!(self, pool, |conn| {
                    conn.build_transaction()
                        .read_only()
                        .repeatable_read()
                        .run(async |tx| -> diesel::QueryResult<PropertyPage> {
                            let rows = pg::properties::page_rows(tx, query).await?;
                            crate::test_hooks::pause!(self.hooks, BetweenRowsAndCount);
                            let count = pg::properties::count_matches(tx, query).await?;
                            Ok(PropertyPage { count, data: rows })
                        })
                        .await
                }),
                Pools::Sqlite { read, .. } => {
                    let query = query.clone();
                    #[cfg(feature = "test-hooks")]
                    let hooks = self.hooks.clone();
                    sqlite_read!(self, read, move |conn| {
                        conn.transaction(async |tx| -> diesel::QueryResult<PropertyPage> {
                            #[cfg(feature = "test-hooks")]
                            crate::service::db::pause_inside_sqlite(tx, &hooks).await?;
                            let rows = sqlite::properties::page_rows(tx, &query).await?;
                            crate::test_hooks::pause!(hooks, BetweenRowsAndCount);
                            let count = sqlite::properties::count_matches(tx, &query).await?;
                            Ok(PropertyPage { count, data: rows })
                        })
                        .await
                    })
                }
            }
        }

        pub async fn find(&self, id: i64) -> Result<Property, DbError> {
            match &self.pools {
                Pools::Pg { pool, .. } => {
                    pg_read!(self, pool, |conn| pg::properties::find(conn, id).await)
                }
                Pools::Sqlite { read, .. } => {
                    sqlite_read!(self, read, move |conn| sqlite::properties::find(conn, id)
                        .await)
                }
            }
        }

        pub async fn insert(&self, new: &NewProperty) -> Result<Property, DbError> {
            write_on_either!(self, DbError, |tx, repo, _heartbeat| repo::insert(tx, new)
                .await)
        }

        /// Changes the given fields; `NotFound` when there is no such row.
        pub async fn update(
            &self,
            id: i64,
            changes: &PropertyChanges,
        ) -> Result<Property, DbError> {
            write_on_either!(self, DbError, |tx, repo, _heartbeat| {
                repo::update(tx, id, changes).await
            })
        }

        /// True when a row was deleted.
        pub async fn delete(&self, id: i64) -> Result<bool, DbError> {
            write_on_either!(self, DbError, |tx, repo, _heartbeat| repo::delete(tx, id)
                .await)
        }

        /// Inserts every batch `next_batch` yields, all in one transaction or none.
        /// `progress` hears the running total after each batch; the statement deadline
        /// applies to each batch, not to the whole import.
        pub async fn import<F>(
            &self,
            mut next_batch: impl FnMut() -> anyhow::Result<Option<Vec<NewProperty>>> + Send,
            mut progress: F,
        ) -> anyhow::Result<usize>
        where
            F: FnMut(usize) + Send,
        {
            write_on_either!(self, anyhow::Error, |tx, repo, heartbeat| {
                let mut total = 0;
                while let Some(batch) = next_batch()? {
                    total += repo::insert_batch(tx, batch).await?;
                    heartbeat.tick();
                    progress(total);
                }
                anyhow::Ok(total)
            })
        }

        /// Tells every listening server that `table` changed, with an origin none of them
        /// skips. Nothing to do on SQLite, where servers notice every commit themselves.
        pub async fn announce_unconfirmed_change(&self, table: &str) -> Result<(), DbError> {
            match &self.pools {
                Pools::Pg { pool, .. } => pg_read!(self, pool, |conn| {
                    crate::service::db::notify::announce_change(conn, table).await
                }),
                Pools::Sqlite { .. } => Ok(()),
            }
        }
    }
}
