//! Which page windows (`LIMIT`, `OFFSET`) a PostgreSQL page statement carries as numbers
//! instead of parameters.
//!
//! With parameters, PostgreSQL cannot know how many rows a generic plan will fetch and
//! plans for a tenth of the table: the generic plan of a newest-first page sorts every
//! row (70 ms instead of 0.4 ms), so the planner keeps making a custom plan for every
//! execution, and planning took as long as executing (0.2–0.3 ms of the database's
//! 0.5–1 ms per miss). With numbers, the generic plan walks the index of the order as
//! the custom ones do, and the statement is planned once per connection (the server's
//! connections take the generic plan at once: see `connect`). Measured by `bench/mix` at
//! 10 writes/s: 23 to 32 % more reads per second on PostgreSQL + Redis.
//!
//! Each window makes a statement of its own, prepared and kept with its plan on every
//! connection (about 170 KB in the PostgreSQL backend for the largest), so windows are
//! admitted only on the first [`LITERAL_PAGES`] pages and only the first
//! [`MAX_WINDOWS`] (statement shape, window) pairs a process meets; the rest take their
//! page's ids from `listings_page_ids`, planned per call with the window known.

use std::collections::HashSet;
use std::sync::{LazyLock, Mutex, PoisonError};

use crate::stable_hash::fnv1a64;

/// Pages from 1 to this one may carry their window as numbers.
pub const LITERAL_PAGES: u32 = 10;
/// At most this many (shape, window) pairs per process: at most as many statements
/// kept per connection.
pub const MAX_WINDOWS: usize = 256;

/// The (shape's hash, limit, offset) triples admitted so far.
type Admitted = Mutex<HashSet<(u64, u32, i64)>>;

static ADMITTED: LazyLock<Admitted> = LazyLock::new(Mutex::default);

/// Whether the statement of `shape` (its text with the window left out) may carry page
/// `page`'s window (`limit`, `offset`) as numbers. Once admitted, always admitted.
pub fn admit(shape: &str, page: u32, limit: u32, offset: i64) -> bool {
    admit_into(&ADMITTED, shape, page, limit, offset)
}

fn admit_into(admitted: &Admitted, shape: &str, page: u32, limit: u32, offset: i64) -> bool {
    if page > LITERAL_PAGES {
        return false;
    }
    let key = (fnv1a64(shape.as_bytes()), limit, offset);
    let mut admitted = admitted.lock().unwrap_or_else(PoisonError::into_inner);
    if admitted.contains(&key) {
        return true;
    }
    if admitted.len() >= MAX_WINDOWS {
        return false;
    }
    admitted.insert(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_admitted_on_early_pages_up_to_the_bound() {
        let admitted = Mutex::default();
        assert!(admit_into(&admitted, "shape", 1, 20, 0));
        assert!(
            !admit_into(&admitted, "shape", LITERAL_PAGES + 1, 20, 200),
            "a deep page keeps parameters"
        );
        for i in 1..MAX_WINDOWS {
            assert!(admit_into(&admitted, "other", 1, i as u32, 0));
        }
        assert!(
            !admit_into(&admitted, "shape", 2, 20, 20),
            "no new pair past the bound"
        );
        assert!(
            admit_into(&admitted, "shape", 1, 20, 0),
            "an admitted pair stays admitted"
        );
    }
}
