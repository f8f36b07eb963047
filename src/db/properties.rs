//! The `properties` repository, written once and expanded per backend (see `db::pg` and
//! `db::sqlite`). Functions take a connection and return Diesel results; services own
//! transactions and the cache. Prices are normalized on every read (SQLite floats).

macro_rules! property_repository {
    ($conn:ty, $schema:ident) => {
        pub mod properties {
            use diesel::prelude::*;
            use diesel_async::RunQueryDsl;

            use crate::db::models::Property;
            use crate::db::schema::$schema::properties as p;
            use crate::domain::{NewProperty, PropertyChanges};

            type Conn = $conn;

            /// Newest first: created_at descending, then id descending.
            pub async fn list_newest_first(conn: &mut Conn) -> QueryResult<Vec<Property>> {
                let rows: Vec<Property> = p::table
                    .order((p::created_at.desc(), p::id.desc()))
                    .load(conn)
                    .await?;
                Ok(rows.into_iter().map(Property::normalized).collect())
            }

            pub async fn find(conn: &mut Conn, property_id: i64) -> QueryResult<Property> {
                let row: Property = p::table.find(property_id).first(conn).await?;
                Ok(row.normalized())
            }

            pub async fn insert(conn: &mut Conn, new: &NewProperty) -> QueryResult<Property> {
                let row: Property = diesel::insert_into(p::table)
                    .values((
                        p::title.eq(&new.title),
                        p::description.eq(&new.description),
                        p::price.eq(&new.price),
                        p::location.eq(&new.location),
                    ))
                    .get_result(conn)
                    .await?;
                Ok(row.normalized())
            }

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

pub(crate) use property_repository;
