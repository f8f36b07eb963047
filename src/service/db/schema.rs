//! Table definitions, one module per backend so each keeps its true column types.
//! Hand-checked: `diesel print-schema` maps SQLite timestamps to naive time.

pub mod pg {
    diesel::table! {
        properties (id) {
            id -> BigInt,
            title -> Varchar,
            description -> Text,
            price -> Numeric,
            location -> Varchar,
            created_at -> Timestamptz,
            location_key -> Text,
        }
    }
}

pub mod sqlite {
    diesel::table! {
        properties (id) {
            id -> BigInt,
            title -> Text,
            description -> Text,
            price -> Numeric,
            location -> Text,
            created_at -> TimestamptzSqlite,
            location_key -> Text,
        }
    }
}
