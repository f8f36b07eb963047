//! A page of a search, its count and the versions of its count nodes in one statement,
//! on either backend. One statement sees one snapshot, so the page and its count still
//! agree without a transaction of their own, and a miss costs one round trip to
//! PostgreSQL instead of six (measured with pgbench on the statements of one miss: twice
//! the transactions per second). The count is not computed when the versions say that
//! the count another page of the search made is still current (`CASE`: both backends
//! evaluate the subqueries of the branch they take only).
//!
//! The same filter, order and count as the repository's (`properties.rs`), written as
//! SQL text; searches by text, which any write can change, take the repository's way.
//! SQLite's planner would sort every row of a price range to find a newest-first page
//! (even with statistics); there the price filter is kept out of index choice (`+price`)
//! so that the page walks the index of its order and stops at its end.

use bigdecimal::BigDecimal;
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{BigInt, Integer, Nullable, Numeric, Text, Timestamptz, Untyped};
use diesel::sqlite::Sqlite;
use diesel::{QueryResult, QueryableByName};
use diesel_async::{AsyncPgConnection, RunQueryDsl as _};

use crate::domain::price_band::{BANDS, band, lowest_of};
use crate::domain::{Property, PropertyPage, PropertyQuery, SortOrder};
use crate::service::count_memo::KnownCount;
use crate::service::db::page_windows;

/// One value bound to the statement.
enum Bind {
    Text(String),
    Numeric(BigDecimal),
    BigInt(i64),
    Integer(i32),
}

/// A parameter in the SQL text: `\u{1}<index>\u{2}`, its index in the values.
const OPEN: char = '\u{1}';
const CLOSE: char = '\u{2}';
/// Where the page's window goes in the text, once it is known whether it is written as
/// numbers (see `page_windows`).
/// (Markers are chars: `replacen` finds a char with memchr, a string by a slower search.)
const WINDOW: char = '\u{3}';
/// Where the page's ids go in the text: an inline statement, or `listings_page_ids`.
const PAGE_IDS: char = '\u{4}';

/// How a page statement finds its page's ids.
enum Window {
    /// Inline, its window written as numbers: PostgreSQL plans the statement once.
    Numbers,
    /// Inline, its window parameters: SQLite plans every statement anew.
    Parameters,
    /// From `listings_page_ids`, which plans their statement per call with the values
    /// known: on PostgreSQL, the pages whose plan depends on their values, and the
    /// windows not written as numbers. A generic plan (what the server's connections
    /// make: see `connect`) cannot know a parameter window is small, and would sort
    /// every row of the filter for it.
    PageIds,
}

/// Whether the page walks the index of its order or gathers its filter's rows and sorts
/// them depends on the filter's values: a price range ordered otherwise than by price
/// (a narrow one is best gathered, a wide one walked); a location ordered by id (no
/// index leads with the location and the id).
fn values_choose_plan(query: &PropertyQuery) -> bool {
    let by_price = matches!(query.ordering, SortOrder::PriceAsc | SortOrder::PriceDesc);
    let by_id = matches!(query.ordering, SortOrder::IdAsc | SortOrder::IdDesc);
    !by_price && (query.has_price_range() || (by_id && query.location.is_some()))
}

/// SQL text and the values of its parameters. Unlike diesel's `sql_query`, it may be
/// prepared once per connection and kept: its text depends only on the query's shape
/// (which filters, which order) and, on early pages, its window (see `page_windows`),
/// never on the filter's values. Parameters are named by their index, so the text can
/// be put together in any order.
#[derive(Default)]
struct Statement {
    text: String,
    binds: Vec<Bind>,
}

impl Statement {
    /// A new parameter holding `value`, to put in the text.
    fn param(&mut self, value: Bind) -> String {
        self.binds.push(value);
        format!("{OPEN}{}{CLOSE}", self.binds.len() - 1)
    }
}

impl QueryId for Statement {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl Query for Statement {
    type SqlType = Untyped;
}

/// The same for both backends: each writes its own placeholders.
macro_rules! statement_fragment {
    ($($backend:ty),+) => {$(
        impl QueryFragment<$backend> for Statement {
            fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, $backend>) -> QueryResult<()> {
                let mut pieces = self.text.split(OPEN);
                out.push_sql(pieces.next().unwrap_or_default());
                for piece in pieces {
                    let bind = piece.split_once(CLOSE).and_then(|(index, rest)| {
                        Some((self.binds.get(index.parse::<usize>().ok()?)?, rest))
                    });
                    let Some((bind, rest)) = bind else {
                        return Err(diesel::result::Error::QueryBuilderError(
                            "a parameter without a value".into(),
                        ));
                    };
                    match bind {
                        Bind::Text(value) => out.push_bind_param::<Text, _>(value)?,
                        Bind::Numeric(value) => out.push_bind_param::<Numeric, _>(value)?,
                        Bind::BigInt(value) => out.push_bind_param::<BigInt, _>(value)?,
                        Bind::Integer(value) => out.push_bind_param::<Integer, _>(value)?,
                    }
                    out.push_sql(rest);
                }
                Ok(())
            }
        }
    )+};
}

statement_fragment!(Pg, Sqlite);

/// One row of the answer: the versions and the count (the same on every row), and one
/// row of the page (all NULL for a page with no rows). `created_at` is read as the
/// backend's `$time`, into a `$raw`, made a time by `$time_of`; `price` as `$price`,
/// into a `$raw_price`, made a price by `$price_of`.
macro_rules! answer {
    ($name:ident, $time:ty, $raw:ty, $time_of:path, $price:ty, $raw_price:ty, $price_of:path) => {
        #[derive(QueryableByName)]
        struct $name {
            #[diesel(sql_type = BigInt)]
            all_version: i64,
            #[diesel(sql_type = BigInt)]
            node_version: i64,
            #[diesel(sql_type = BigInt)]
            total: i64,
            #[diesel(sql_type = Nullable<BigInt>)]
            id: Option<i64>,
            #[diesel(sql_type = Nullable<Text>)]
            title: Option<String>,
            #[diesel(sql_type = Nullable<Text>)]
            description: Option<String>,
            #[diesel(sql_type = Nullable<$price>)]
            price: Option<$raw_price>,
            #[diesel(sql_type = Nullable<Text>)]
            location: Option<String>,
            #[diesel(sql_type = Nullable<$time>)]
            created_at: Option<$raw>,
        }

        impl $name {
            fn page(answers: Vec<$name>, known: Option<&KnownCount>) -> Loaded {
                let Some(first) = answers.iter().next() else {
                    // The statement answers one row at least: its versions and count.
                    return Err(diesel::result::Error::NotFound);
                };
                let versions = vec![first.all_version, first.node_version];
                let count = first.total;
                let shared = known.is_some_and(|known| known.versions == versions);
                let mut data = Vec::with_capacity(answers.len());
                for answer in answers {
                    let (Some(id), Some(title), Some(description), Some(price), Some(location)) = (
                        answer.id,
                        answer.title,
                        answer.description,
                        answer.price,
                        answer.location,
                    ) else {
                        continue;
                    };
                    let created_at =
                        answer
                            .created_at
                            .map($time_of)
                            .transpose()?
                            .ok_or_else(|| {
                                diesel::result::Error::DeserializationError(
                                    "created_at is NULL".into(),
                                )
                            })?;
                    let row = Property {
                        id,
                        title,
                        description,
                        price: $price_of(price),
                        location,
                        created_at,
                    };
                    data.push(row.normalized());
                }
                let counted = (!shared).then_some(KnownCount { versions, count });
                Ok(Some((PropertyPage { count, data }, counted)))
            }
        }
    };
}

answer!(
    PgAnswer,
    Timestamptz,
    chrono::DateTime<chrono::Utc>,
    pg_time,
    BigInt,
    i64,
    price_of_cents
);

/// A price PostgreSQL hands in cents (`NUMERIC(10, 2)` times 100: exact). Decoding the
/// numeric itself cost 3 % of a miss's instructions.
fn price_of_cents(cents: i64) -> BigDecimal {
    BigDecimal::new(cents.into(), 2)
}

/// A time as PostgreSQL hands it, already one.
fn pg_time(
    time: chrono::DateTime<chrono::Utc>,
) -> diesel::QueryResult<chrono::DateTime<chrono::Utc>> {
    Ok(time)
}
answer!(
    SqliteAnswer,
    Text,
    String,
    sqlite_time,
    Numeric,
    BigDecimal,
    std::convert::identity
);

/// A time as SQLite holds it: RFC 3339 as the application writes it (parsed at once),
/// else the forms diesel's `TimestamptzSqlite` reads that another program may have
/// written (diesel tries 18 formats in turn, the application's among the last: that
/// cost a miss on SQLite 7 % of its time).
fn sqlite_time(text: String) -> diesel::QueryResult<chrono::DateTime<chrono::Utc>> {
    use chrono::{DateTime, NaiveDateTime, Utc};
    if let Ok(time) = DateTime::parse_from_rfc3339(&text) {
        return Ok(time.with_timezone(&Utc));
    }
    for format in ["%F %T%.f%:z", "%FT%T%.f%:z"] {
        if let Ok(time) = DateTime::parse_from_str(&text, format) {
            return Ok(time.with_timezone(&Utc));
        }
    }
    for format in ["%F %T%.f", "%FT%T%.f", "%F %R", "%FT%R"] {
        if let Ok(time) = NaiveDateTime::parse_from_str(&text, format) {
            return Ok(time.and_utc());
        }
    }
    Err(diesel::result::Error::DeserializationError(
        format!("created_at {text:?} is no time").into(),
    ))
}

/// A page and its count, and the count for other pages of the search to share when it
/// was counted; `None` for a search by text.
type Loaded = diesel::QueryResult<Option<(PropertyPage, Option<KnownCount>)>>;

/// [`Loaded`] on PostgreSQL.
pub async fn pg_page_with_count(
    conn: &mut AsyncPgConnection,
    query: &PropertyQuery,
    known: Option<&KnownCount>,
) -> Loaded {
    let Some(statement) = build(query, known, Dialect::Postgres, false) else {
        return Ok(None);
    };
    PgAnswer::page(statement.load(conn).await?, known)
}

/// [`Loaded`] on SQLite.
pub async fn sqlite_page_with_count(
    conn: &mut crate::service::db::SqliteConn,
    query: &PropertyQuery,
    known: Option<&KnownCount>,
) -> Loaded {
    let Some(statement) = build(query, known, Dialect::Sqlite, false) else {
        return Ok(None);
    };
    SqliteAnswer::page(statement.load(conn).await?, known)
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Sqlite,
}

/// The statement `query`'s page runs on a miss that counts, with its values written in
/// as literals (for `EXPLAIN`, or pgbench); `None` for a search by text.
pub fn literal(query: &PropertyQuery, dialect: Dialect) -> Option<String> {
    let statement = build(query, None, dialect, true)?;
    let mut pieces = statement.text.split(OPEN);
    let mut sql = pieces.next().unwrap_or_default().to_owned();
    for piece in pieces {
        let (index, rest) = piece.split_once(CLOSE)?;
        match statement.binds.get(index.parse::<usize>().ok()?)? {
            Bind::Text(value) => sql += &format!("'{}'", value.replace('\'', "''")),
            Bind::Numeric(value) => sql += &value.to_plain_string(),
            Bind::BigInt(value) => sql += &value.to_string(),
            Bind::Integer(value) => sql += &value.to_string(),
        }
        sql += rest;
    }
    Some(sql)
}

/// The statement for `query`; `None` for a search by text.
/// `written_out`: for [`literal`].
fn build(
    query: &PropertyQuery,
    known: Option<&KnownCount>,
    dialect: Dialect,
    written_out: bool,
) -> Option<Statement> {
    let nodes = count_nodes(query)?;
    let mut statement = Statement::default();
    let node = statement.param(Bind::Text(nodes[1].clone()));
    let total = match known {
        Some(known) => {
            let all = statement.param(Bind::BigInt(known.versions[0]));
            let this = statement.param(Bind::BigInt(known.versions[1]));
            let shared = statement.param(Bind::BigInt(known.count));
            let count = count(&mut statement, query);
            format!(
                "CASE WHEN (SELECT all_version FROM v) = {all} \
                 AND (SELECT node_version FROM v) = {this} THEN {shared} ELSE {count} END"
            )
        }
        None => count(&mut statement, query),
    };
    let order = order_by_on("properties", query.ordering);
    let by_price = matches!(query.ordering, SortOrder::PriceAsc | SortOrder::PriceDesc);
    // SQLite: the price must not choose the index when the order has one of its own.
    let price_column = if dialect == Dialect::Sqlite && !by_price {
        "+price"
    } else {
        "price"
    };
    let before_filter = statement.binds.len();
    let filter = filter_on(&mut statement, &Bounds::of(query), price_column);
    let inline =
        format!("SELECT id FROM properties WHERE {filter} ORDER BY {order} LIMIT {WINDOW}");
    statement.text = format!(
        "WITH v AS (SELECT \
           coalesce((SELECT version FROM listing_versions WHERE node = 'all'), 0) AS all_version, \
           coalesce((SELECT version FROM listing_versions WHERE node = {node}), 0) AS node_version), \
         c AS (SELECT CAST({total} AS BIGINT) AS total), \
         p AS (SELECT id, title, description, price, location, created_at FROM properties \
           WHERE id IN ({PAGE_IDS})) \
         SELECT v.all_version, v.node_version, c.total, p.id, p.title, p.description, \
           {price} AS price, p.location, p.created_at \
         FROM v CROSS JOIN c LEFT JOIN p ON true \
         ORDER BY {outer}",
        outer = order_by_on("p", query.ordering),
        price = match dialect {
            Dialect::Postgres => "CAST(p.price * 100 AS BIGINT)",
            Dialect::Sqlite => "p.price",
        },
    );
    let (limit, offset) = (query.page_size, query.offset());
    let window = match dialect {
        // Written out, every value is a literal anyway.
        Dialect::Postgres if written_out => Window::Numbers,
        Dialect::Postgres if values_choose_plan(query) => Window::PageIds,
        Dialect::Postgres => {
            let shape = statement.text.replacen(PAGE_IDS, &inline, 1);
            match page_windows::admit(&shape, query.page, limit, offset) {
                true => Window::Numbers,
                false => Window::PageIds,
            }
        }
        Dialect::Sqlite => Window::Parameters,
    };
    let page_ids = match window {
        Window::Numbers => inline.replacen(WINDOW, &format!("{limit} OFFSET {offset}"), 1),
        Window::Parameters => {
            let limit = statement.param(Bind::BigInt(i64::from(limit)));
            let offset = statement.param(Bind::BigInt(offset));
            inline.replacen(WINDOW, &format!("{limit} OFFSET {offset}"), 1)
        }
        Window::PageIds => {
            statement.binds.truncate(before_filter);
            page_ids_call(&mut statement, query)
        }
    };
    statement.text = statement.text.replacen(PAGE_IDS, &page_ids, 1);
    Some(statement)
}

/// The page's ids from `listings_page_ids`, which plans their statement per call.
fn page_ids_call(statement: &mut Statement, query: &PropertyQuery) -> String {
    let mut text = |value: Option<Bind>, null: &str| match value {
        Some(value) => statement.param(value),
        None => null.to_owned(),
    };
    let key = text(query.location.clone().map(Bind::Text), "NULL::text");
    let low = text(query.min_price.clone().map(Bind::Numeric), "NULL::numeric");
    let high = text(query.max_price.clone().map(Bind::Numeric), "NULL::numeric");
    let limit = statement.param(Bind::BigInt(i64::from(query.page_size)));
    let offset = statement.param(Bind::BigInt(query.offset()));
    format!(
        "SELECT page.id FROM listings_page_ids({key}, {low}, {high}, '{ordering}', {limit}, {offset}) AS page(id)",
        ordering = query.ordering.as_str()
    )
}

/// A search's location and price bounds, as its statement filters by them.
#[derive(Default)]
struct Bounds<'a> {
    location: Option<&'a String>,
    /// Inclusive.
    from: Option<&'a BigDecimal>,
    /// Exclusive.
    below: Option<&'a BigDecimal>,
    /// Inclusive.
    to: Option<&'a BigDecimal>,
}

impl<'a> Bounds<'a> {
    /// The query's own location and price range.
    fn of(query: &'a PropertyQuery) -> Bounds<'a> {
        Bounds {
            location: query.location.as_ref(),
            from: query.min_price.as_ref(),
            below: None,
            to: query.max_price.as_ref(),
        }
    }
}

/// The conditions of `bounds`, comparing `price` as written (`+price` on SQLite keeps it
/// from choosing the index).
fn filter_on(statement: &mut Statement, bounds: &Bounds<'_>, price: &str) -> String {
    let mut conditions = vec!["1 = 1".to_owned()];
    if let Some(location) = bounds.location {
        conditions.push(format!(
            "location_key = {}",
            statement.param(Bind::Text(location.clone()))
        ));
    }
    let comparisons = [(">=", bounds.from), ("<", bounds.below), ("<=", bounds.to)];
    for (comparison, bound) in comparisons {
        if let Some(bound) = bound {
            let value = statement.param(Bind::Numeric(bound.clone()));
            conditions.push(format!("{price} {comparison} {value}"));
        }
    }
    conditions.join(" AND ")
}

/// The count of the query's matches, as the repository's `count_matches` makes it: the
/// bands the price range covers whole from the table of counts, rows counted in the
/// index only in the bands its bounds fall in.
fn count(statement: &mut Statement, query: &PropertyQuery) -> String {
    let (min, max) = (&query.min_price, &query.max_price);
    let location = query.location.as_ref();
    let rows_between = |statement: &mut Statement, bounds: &Bounds<'_>| {
        let filter = filter_on(statement, bounds, "price");
        format!("(SELECT count(*) FROM properties WHERE {filter})")
    };
    if let (Some(min), Some(max)) = (min, max) {
        if min > max {
            return "0".to_owned();
        }
        if band(min) == band(max) {
            let bounds = Bounds {
                location,
                from: Some(min),
                to: Some(max),
                ..Bounds::default()
            };
            return rows_between(statement, &bounds);
        }
    }
    let mut parts = Vec::new();
    let first_whole = match min {
        Some(min) => {
            let low = band(min);
            let next_band = lowest_of(low + 1);
            let bounds = Bounds {
                location,
                from: Some(min),
                below: next_band.as_ref(),
                ..Bounds::default()
            };
            parts.push(rows_between(statement, &bounds));
            low + 1
        }
        None => 0,
    };
    let whole_below = match max {
        Some(max) => {
            let high = band(max);
            let its_band = lowest_of(high);
            let bounds = Bounds {
                location,
                from: its_band.as_ref(),
                to: Some(max),
                ..Bounds::default()
            };
            parts.push(rows_between(statement, &bounds));
            high
        }
        None => BANDS,
    };
    if first_whole < whole_below {
        let from = statement.param(Bind::Integer(first_whole as i32));
        let below = statement.param(Bind::Integer(whole_below as i32));
        let location = match &query.location {
            Some(location) => format!(
                " AND location_key = {}",
                statement.param(Bind::Text(location.clone()))
            ),
            None => String::new(),
        };
        parts.push(format!(
            "(SELECT coalesce(sum(n), 0) FROM listing_counts \
             WHERE band >= {from} AND band < {below}{location})"
        ));
    }
    if parts.is_empty() {
        "0".to_owned()
    } else {
        parts.join(" + ")
    }
}

/// Ties in the sort column are broken by id, in the same direction.
fn order_by_on(table: &str, ordering: SortOrder) -> String {
    let (column, direction) = match ordering {
        SortOrder::PriceAsc => (Some("price"), "ASC"),
        SortOrder::PriceDesc => (Some("price"), "DESC"),
        SortOrder::CreatedAtAsc => (Some("created_at"), "ASC"),
        SortOrder::CreatedAtDesc => (Some("created_at"), "DESC"),
        SortOrder::IdAsc => (None, "ASC"),
        SortOrder::IdDesc => (None, "DESC"),
    };
    match column {
        Some(column) => format!("{table}.{column} {direction}, {table}.id {direction}"),
        None => format!("{table}.id {direction}"),
    }
}

/// The count nodes (see the `row_changes` migration) whose versions say whether a count
/// of `query`'s matches is still current; `None` for a search by text, whose matches
/// any write can change.
pub fn count_nodes(query: &PropertyQuery) -> Option<Vec<String>> {
    if query.search.is_some() {
        return None;
    }
    let node = match (&query.location, query.has_price_range()) {
        (None, false) => "g".to_owned(),
        (None, true) => "p".to_owned(),
        (Some(key), false) => format!("l:{key}"),
        (Some(key), true) => format!("lp:{key}"),
    };
    Some(vec!["all".to_owned(), node])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_times_read_in_the_forms_they_are_written() {
        let at = |text: &str| sqlite_time(text.to_owned()).map(|t| t.to_rfc3339());
        let noon = Ok("2026-12-06T12:00:00.123+00:00".to_owned());
        assert_eq!(at("2026-12-06T12:00:00.123Z"), noon, "the application's");
        assert_eq!(at("2026-12-06T14:00:00.123+02:00"), noon);
        assert_eq!(at("2026-12-06 12:00:00.123"), noon, "SQLite's datetime()");
        assert_eq!(
            at("2026-12-06 12:00"),
            Ok("2026-12-06T12:00:00+00:00".to_owned())
        );
        assert!(at("yesterday").is_err());
    }

    #[test]
    fn literal_statements_quote_their_text() {
        let query = PropertyQuery::from_query_string("location=O'Hara&min_price=10").unwrap();
        let sql = literal(&query, Dialect::Postgres).unwrap();
        assert!(sql.contains("location_key = 'o''hara'"), "{sql}");
        assert!(!sql.contains(OPEN) && !sql.contains(CLOSE));
        let sqlite = literal(&query, Dialect::Sqlite).unwrap();
        assert!(sqlite.contains("+price >= 10"), "newest first: {sqlite}");
        let search = PropertyQuery::from_query_string("search=sea").unwrap();
        assert_eq!(literal(&search, Dialect::Postgres), None);
    }
}
