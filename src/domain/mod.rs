//! Domain types that parse once and are valid from then on: nothing invalid reaches the
//! database or a cache key.

mod property;
mod query;

pub use property::*;
pub use query::{PropertyQuery, SortOrder};
