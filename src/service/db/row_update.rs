//! One listing's update, returning the row's facts from before it (where the row was,
//! for the cache) and the row after it. SQLite's write transaction holds the file's
//! write lock, so it reads the row and then updates it. PostgreSQL does both in one
//! statement that also returns the transaction's id (see `write_fate`): a write there
//! costs BEGIN, this statement and COMMIT, where a read, an update and a question for
//! the id cost two round trips more (under a miss-bound load each one waits its turn
//! for a core: measured with bench/mix, about half of a write's time in the database).

use bigdecimal::BigDecimal;
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{BigInt, Nullable, Numeric, Text, Timestamptz, Untyped};
use diesel::{ExpressionMethods as _, QueryDsl as _, QueryResult, QueryableByName};
use diesel_async::{AsyncPgConnection, RunQueryDsl as _};

use super::SqliteConn;
use super::write_fate::ReturnedXid;
use crate::domain::text::match_key;
use crate::domain::{Property, PropertyChanges, RowFacts};

/// The row's facts before, the row and its facts after.
/// An update as it happened: the row as the write found it (locked) and as it left
/// it, each with its facts.
pub struct RowUpdate {
    pub old: Property,
    pub old_facts: RowFacts,
    pub new: Property,
    pub new_facts: RowFacts,
}

pub async fn sqlite_update(
    conn: &mut SqliteConn,
    property_id: i64,
    changes: &PropertyChanges,
    _xid: &ReturnedXid,
) -> QueryResult<RowUpdate> {
    use super::schema::sqlite::properties as p;
    use super::sqlite::properties::{PROPERTY, facts};
    let (old, old_facts): (Property, RowFacts) = p::table
        .find(property_id)
        .select((PROPERTY, facts()))
        .first(conn)
        .await?;
    let (row, after): (Property, RowFacts) = diesel::update(p::table.find(property_id))
        .set((
            changes.title.as_ref().map(|v| p::title.eq(v)),
            changes.description.as_ref().map(|v| p::description.eq(v)),
            changes.price.as_ref().map(|v| p::price.eq(v)),
            changes.location.as_ref().map(|v| p::location.eq(v)),
            changes
                .location
                .as_deref()
                .map(|v| p::location_key.eq(match_key(v))),
            changes
                .title
                .as_deref()
                .map(|v| p::title_key.eq(match_key(v))),
            changes
                .description
                .as_deref()
                .map(|v| p::description_key.eq(match_key(v))),
        ))
        .returning((PROPERTY, facts()))
        .get_result(conn)
        .await?;
    Ok(RowUpdate {
        old: old.normalized(),
        old_facts: old_facts.normalized(),
        new: row.normalized(),
        new_facts: after.normalized(),
    })
}

pub async fn pg_update(
    conn: &mut AsyncPgConnection,
    property_id: i64,
    changes: &PropertyChanges,
    xid: &ReturnedXid,
) -> QueryResult<RowUpdate> {
    let statement = PgUpdate {
        property_id,
        changes,
        location_key: changes.location.as_deref().map(match_key),
        title_key: changes.title.as_deref().map(match_key),
        description_key: changes.description.as_deref().map(match_key),
    };
    let answer: PgAnswer = statement.get_result(conn).await?;
    xid.set(answer.xid);
    let old = Property {
        id: answer.old_id,
        title: answer.old_title,
        description: answer.old_description,
        price: answer.old_price.clone(),
        location: answer.old_location,
        created_at: answer.old_created_at,
    };
    let old_facts = RowFacts {
        id: answer.old_id,
        location_key: answer.old_location_key,
        price: answer.old_price,
    };
    let after = RowFacts {
        id: answer.id,
        location_key: answer.location_key,
        price: answer.price.clone(),
    };
    let row = Property {
        id: answer.id,
        title: answer.title,
        description: answer.description,
        price: answer.price,
        location: answer.location,
        created_at: answer.created_at,
    };
    Ok(RowUpdate {
        old: old.normalized(),
        old_facts: old_facts.normalized(),
        new: row.normalized(),
        new_facts: after.normalized(),
    })
}

/// `UPDATE … FROM` the row locked first (`FOR UPDATE`): its facts are then those of the
/// version this update replaced, even when another writer changed the row after this
/// statement's snapshot. A field left out keeps its value (`COALESCE` with NULL).
struct PgUpdate<'a> {
    property_id: i64,
    changes: &'a PropertyChanges,
    location_key: Option<String>,
    title_key: Option<String>,
    description_key: Option<String>,
}

#[derive(QueryableByName)]
struct PgAnswer {
    #[diesel(sql_type = BigInt)]
    old_id: i64,
    #[diesel(sql_type = Nullable<Text>)]
    old_location_key: Option<String>,
    #[diesel(sql_type = Numeric)]
    old_price: BigDecimal,
    #[diesel(sql_type = Text)]
    old_title: String,
    #[diesel(sql_type = Text)]
    old_description: String,
    #[diesel(sql_type = Text)]
    old_location: String,
    #[diesel(sql_type = Timestamptz)]
    old_created_at: chrono::DateTime<chrono::Utc>,
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    title: String,
    #[diesel(sql_type = Text)]
    description: String,
    #[diesel(sql_type = Numeric)]
    price: BigDecimal,
    #[diesel(sql_type = Text)]
    location: String,
    #[diesel(sql_type = Timestamptz)]
    created_at: chrono::DateTime<chrono::Utc>,
    #[diesel(sql_type = Nullable<Text>)]
    location_key: Option<String>,
    #[diesel(sql_type = Text)]
    xid: String,
}

/// The statement's text never changes: prepared once per connection.
struct PgUpdateStatement;

impl QueryId for PgUpdate<'_> {
    type QueryId = PgUpdateStatement;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl Query for PgUpdate<'_> {
    type SqlType = Untyped;
}

impl QueryFragment<Pg> for PgUpdate<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(
            "WITH old AS (SELECT id, location_key, price, title, description, location, \
             created_at FROM properties WHERE id = ",
        );
        out.push_bind_param::<BigInt, _>(&self.property_id)?;
        out.push_sql(" FOR UPDATE) UPDATE properties p SET title = COALESCE(");
        out.push_bind_param::<Nullable<Text>, _>(&self.changes.title)?;
        out.push_sql(", p.title), description = COALESCE(");
        out.push_bind_param::<Nullable<Text>, _>(&self.changes.description)?;
        out.push_sql(", p.description), price = COALESCE(");
        out.push_bind_param::<Nullable<Numeric>, _>(&self.changes.price)?;
        out.push_sql(", p.price), location = COALESCE(");
        out.push_bind_param::<Nullable<Text>, _>(&self.changes.location)?;
        out.push_sql(", p.location), location_key = COALESCE(");
        out.push_bind_param::<Nullable<Text>, _>(&self.location_key)?;
        out.push_sql(", p.location_key), title_key = COALESCE(");
        out.push_bind_param::<Nullable<Text>, _>(&self.title_key)?;
        out.push_sql(", p.title_key), description_key = COALESCE(");
        out.push_bind_param::<Nullable<Text>, _>(&self.description_key)?;
        out.push_sql(
            ", p.description_key) FROM old WHERE p.id = old.id \
             RETURNING old.id AS old_id, old.location_key AS old_location_key, \
             old.price AS old_price, old.title AS old_title, \
             old.description AS old_description, old.location AS old_location, \
             old.created_at AS old_created_at, p.id, p.title, p.description, p.price, p.location, \
             p.created_at, p.location_key, pg_current_xact_id()::text AS xid",
        );
        Ok(())
    }
}
