//! Domain types that parse once and are valid from then on: nothing invalid reaches the
//! database or a cache key.

mod fields;
pub mod price_band;
mod property;
pub mod query;
mod record;
pub mod text;

pub use fields::{FIELD_NAMES, FieldsError, PropertyFields, unknown_fields_error};
pub use property::*;
pub use query::{PropertyQuery, SortOrder};
pub use record::{Property, PropertyPage, RowChange, RowFacts};
