//! The `properties` repository, written once and expanded per backend (see `db::pg` and
//! `db::sqlite`). Functions take a connection and return Diesel results; services own
//! transactions and the cache. Prices are normalized on every read (SQLite floats).

/// The insertable columns of one `NewProperty`, against either backend's table `$p`.
macro_rules! property_values {
    ($p:ident, $new:expr) => {
        (
            $p::title.eq(&$new.title),
            $p::description.eq(&$new.description),
            $p::price.eq(&$new.price),
            $p::location.eq(&$new.location),
        )
    };
}

macro_rules! property_repository {
    ($conn:ty, $backend:ty, $schema:ident, $insert_batch:path) => {
        pub mod properties {
            use diesel::prelude::*;
            use diesel_async::RunQueryDsl;

            use crate::db::lower;
            use crate::db::models::{Property, PropertyPage};
            use crate::db::schema::$schema::properties as p;
            use crate::domain::{NewProperty, PropertyChanges, PropertyQuery, SortOrder};

            type Conn = $conn;

            /// The rows matching the query's filters, in no particular order. Text
            /// filters arrive lower-cased and are compared with `lower(column)`.
            fn matching(query: &PropertyQuery) -> p::BoxedQuery<'_, $backend> {
                let mut rows = p::table.into_boxed();
                if let Some(location) = &query.location {
                    rows = rows.filter(lower(p::location).eq(location));
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

            /// One page of the matching rows and how many match in all. Ties in the
            /// sort column are broken by id, in the same direction.
            pub async fn list_page(
                conn: &mut Conn,
                query: &PropertyQuery,
            ) -> QueryResult<PropertyPage> {
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
                    .limit(i64::from(query.page_size))
                    .offset(query.offset())
                    .load(conn)
                    .await?;
                // A separate count is cheaper than `COUNT(*) OVER ()`, which must
                // materialize every matching row instead of walking the price index
                // for one page (measured with bench/run). A write between the two
                // statements cannot be cached past its own invalidation.
                let count: i64 = matching(query).count().get_result(conn).await?;
                Ok(PropertyPage {
                    count,
                    data: rows.into_iter().map(Property::normalized).collect(),
                })
            }

            pub async fn find(conn: &mut Conn, property_id: i64) -> QueryResult<Property> {
                let row: Property = p::table.find(property_id).first(conn).await?;
                Ok(row.normalized())
            }

            pub async fn insert(conn: &mut Conn, new: &NewProperty) -> QueryResult<Property> {
                let row: Property = diesel::insert_into(p::table)
                    .values(crate::db::properties::property_values!(p, new))
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
                    ))
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

    use crate::db::SqliteConn;
    use crate::db::schema;
    use crate::domain::NewProperty;

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
