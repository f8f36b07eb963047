//! The `properties` repository, written once and expanded per backend (see `db::pg` and
//! `db::sqlite`). Its functions take a connection, so that the services compose them
//! inside the transactions they choose (see `dispatch!`). Prices are normalized on
//! every read (SQLite floats).

/// The insertable columns of one `NewProperty`, against either backend's table `$p`.
macro_rules! property_values {
    ($p:ident, $new:expr) => {
        (
            $p::title.eq(&$new.title),
            $p::description.eq(&$new.description),
            $p::price.eq(&$new.price),
            $p::location.eq(&$new.location),
            $p::location_key.eq(crate::domain::text::match_key(&$new.location)),
            $p::title_key.eq(crate::domain::text::match_key(&$new.title)),
            $p::description_key.eq(crate::domain::text::match_key(&$new.description)),
        )
    };
}

macro_rules! property_repository {
    (
        $conn:ty,
        $backend:ty,
        $schema:ident,
        $insert_batch:path,
        $update:path,
        $transaction_id:path,
        $plan_for_values:path
    ) => {
        pub mod properties {
            use diesel::prelude::*;
            use diesel_async::RunQueryDsl;

            use crate::domain::{NewProperty, PropertyQuery, SortOrder};
            use crate::domain::{Property, RowFacts};
            use crate::service::db::write_fate::ReturnedXid;
            use crate::service::db::schema::$schema::properties as p;

            type Conn = $conn;

            /// The columns of [`Property`], in its order (the table has more).
            #[rustfmt::skip]
            pub(in crate::service::db) type Columns = (p::id, p::title, p::description, p::price, p::location, p::created_at);
            #[rustfmt::skip]
            pub(in crate::service::db) const PROPERTY: Columns =
                (p::id, p::title, p::description, p::price, p::location, p::created_at);

            /// The columns of [`RowFacts`].
            #[rustfmt::skip]
            pub(in crate::service::db) fn facts() -> (
                p::id,
                diesel::dsl::Nullable<p::location_key>,
                p::price,
            ) {
                (p::id, p::location_key.nullable(), p::price)
            }

            /// The rows matching the query's filters, in no particular order. A location
            /// or search filter arrives as its match key and is compared with the stored
            /// keys (the location's indexed).
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
                        p::title_key
                            .like(pattern.clone())
                            .escape('\\')
                            .or(p::description_key.like(pattern).escape('\\')),
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

            /// `rows` in the query's order; ties in the sort column are broken by id, in
            /// the same direction.
            fn in_order<'a>(
                rows: p::BoxedQuery<'a, $backend>,
                ordering: SortOrder,
            ) -> p::BoxedQuery<'a, $backend> {
                match ordering {
                    SortOrder::PriceAsc => rows.order((p::price.asc(), p::id.asc())),
                    SortOrder::PriceDesc => rows.order((p::price.desc(), p::id.desc())),
                    SortOrder::CreatedAtAsc => rows.order((p::created_at.asc(), p::id.asc())),
                    SortOrder::CreatedAtDesc => rows.order((p::created_at.desc(), p::id.desc())),
                    SortOrder::IdAsc => rows.order(p::id.asc()),
                    SortOrder::IdDesc => rows.order(p::id.desc()),
                }
            }

            /// One page of the matching rows, in the query's order. Its ids come from an
            /// index that holds the filter's and the order's columns, so the rows it skips
            /// are never read from the table; then its rows, by id. Run it and
            /// [`count_matches`] in one read transaction, so that the page and the count
            /// agree.
            pub async fn page_rows(
                conn: &mut Conn,
                query: &PropertyQuery,
            ) -> QueryResult<Vec<Property>> {
                let ids = in_order(matching(query), query.ordering)
                    .select(p::id)
                    .limit(i64::from(query.page_size))
                    .offset(query.offset());
                let rows: Vec<Property> = in_order(p::table.into_boxed(), query.ordering)
                    .filter(p::id.eq_any(ids))
                    .select(PROPERTY)
                    .load(conn)
                    .await?;
                Ok(rows.into_iter().map(Property::normalized).collect())
            }

            /// For the rest of the transaction on `conn`, statements are planned for
            /// their values. A search by text needs it (see `list_page`): its best plan
            /// depends on the words, a rare one best found by reading the table, a
            /// common one by walking the order's index until the page is full.
            pub async fn plan_for_values(conn: &mut Conn) -> QueryResult<()> {
                $plan_for_values(conn).await
            }

            /// How many rows match in all, counted (a text search: see `page_statement`
            /// for the other searches, whose counts come from the table of counts).
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

            /// The new row, and its facts.
            pub async fn insert(
                conn: &mut Conn,
                new: &NewProperty,
                xid: &ReturnedXid,
            ) -> QueryResult<(Property, RowFacts)> {
                let (row, facts, transaction): (Property, RowFacts, Option<String>) =
                    diesel::insert_into(p::table)
                        .values(crate::service::db::properties::property_values!(p, new))
                        .returning((PROPERTY, facts(), $transaction_id()))
                        .get_result(conn)
                        .await?;
                xid.set_if_known(transaction);
                Ok((row.normalized(), facts.normalized()))
            }

            /// Inserts many rows in one statement (see `db::bulk`); returns their facts.
            pub use $insert_batch as insert_batch;

            /// Changes the given fields: the row's facts before, the row and its facts
            /// after; `NotFound` when there is no such row (see `row_update`).
            pub use $update as update;

            /// The deleted row's facts; `None` when there was no such row.
            pub async fn delete(
                conn: &mut Conn,
                property_id: i64,
                xid: &ReturnedXid,
            ) -> QueryResult<Option<(Property, RowFacts)>> {
                let deleted: Option<(Property, RowFacts, Option<String>)> =
                    diesel::delete(p::table.find(property_id))
                        .returning((PROPERTY, facts(), $transaction_id()))
                        .get_result(conn)
                        .await
                        .optional()?;
                Ok(deleted.map(|(row, facts, transaction)| {
                    xid.set_if_known(transaction);
                    (row.normalized(), facts.normalized())
                }))
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

    use crate::domain::{NewProperty, RowFacts};
    use crate::service::db::SqliteConn;
    use crate::service::db::schema;

    pub async fn pg_insert_batch(
        conn: &mut AsyncPgConnection,
        rows: Vec<NewProperty>,
    ) -> QueryResult<Vec<RowFacts>> {
        use schema::pg::properties as p;
        let values: Vec<_> = rows.iter().map(|new| property_values!(p, new)).collect();
        diesel::insert_into(p::table)
            .values(values)
            .returning(crate::service::db::pg::properties::facts())
            .get_results(conn)
            .await
    }

    pub async fn sqlite_insert_batch(
        conn: &mut SqliteConn,
        rows: Vec<NewProperty>,
    ) -> QueryResult<Vec<RowFacts>> {
        use schema::sqlite::properties as p;
        conn.spawn_blocking(move |conn| {
            let values: Vec<_> = rows.iter().map(|new| property_values!(p, new)).collect();
            let facts: Vec<RowFacts> = diesel::RunQueryDsl::get_results(
                diesel::insert_into(p::table)
                    .values(values)
                    .returning(crate::service::db::sqlite::properties::facts()),
                conn,
            )?;
            Ok(facts.into_iter().map(RowFacts::normalized).collect())
        })
        .await
    }
}
