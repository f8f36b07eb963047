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
            title_key -> Text,
            description_key -> Text,
        }
    }

    diesel::table! {
        listing_versions (node) {
            node -> Text,
            version -> BigInt,
        }
    }

    diesel::table! {
        listing_counts (location_key, band) {
            location_key -> Text,
            band -> Integer,
            n -> BigInt,
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
            title_key -> Text,
            description_key -> Text,
        }
    }

    diesel::table! {
        listing_versions (node) {
            node -> Text,
            version -> BigInt,
        }
    }

    diesel::table! {
        listing_counts (location_key, band) {
            location_key -> Text,
            band -> Integer,
            n -> BigInt,
        }
    }

    diesel::table! {
        listing_changes (seq) {
            seq -> BigInt,
            old_id -> Nullable<BigInt>,
            old_key -> Nullable<Text>,
            old_price -> Nullable<Numeric>,
            old_created -> Nullable<Text>,
            new_id -> Nullable<BigInt>,
            new_key -> Nullable<Text>,
            new_price -> Nullable<Numeric>,
            new_created -> Nullable<Text>,
        }
    }
}
