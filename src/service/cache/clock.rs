//! Whether a cached entry is still current. Every bump (one per write) gets the next
//! number of a sequence and records it against each tag it bumps (see `tags`). An entry
//! carries a [`Stamp`]: the number the sequence stood at *before* its value was loaded,
//! and its tags. It is current while none of its tags was bumped after that number:
//!
//! - a write commits, then bumps: a reader that read the sequence after the bump loads
//!   after the commit, and one that read it before stores a stamp the bump has already
//!   outdated, whenever its store lands ("no stale set", with nothing to check at store
//!   time);
//! - bumps are recorded in any order and any number of times (each tag keeps the
//!   highest), so a clock can mirror another one (the near-cache lease mirrors Redis's)
//!   from messages and snapshots alike.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::service::cache::tags::{ALL, Tag, TagSet};

/// When an entry's value was loaded, and what it depends on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// The sequence number before the load began.
    pub seq: u64,
    pub tags: TagSet,
}

pub struct TagClock {
    /// Every bump up to it is recorded.
    seq: AtomicU64,
    /// The highest bump recorded ahead of its turn (see [`TagClock::record_ahead`]).
    ahead: AtomicU64,
    /// By tag: the number of its latest bump.
    bumped_at: Box<[AtomicU64]>,
}

impl Default for TagClock {
    fn default() -> Self {
        TagClock {
            seq: AtomicU64::new(0),
            ahead: AtomicU64::new(0),
            bumped_at: (0..Tag::COUNT).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl TagClock {
    /// The number a load beginning now stamps its value with: every bump up to it was
    /// made, so every write it retired had committed.
    pub fn seq(&self) -> u64 {
        self.recorded_through()
            .max(self.ahead.load(Ordering::Acquire))
    }

    /// Every bump up to this number is recorded (a mirror confirms this much).
    pub fn recorded_through(&self) -> u64 {
        self.seq.load(Ordering::Acquire)
    }

    /// True while no bump of the stamp's tags (or of everything) came after it.
    pub fn is_current(&self, stamp: &Stamp) -> bool {
        let fresh = |tag: Tag| self.bumped_at[tag.index()].load(Ordering::Acquire) <= stamp.seq;
        fresh(ALL) && stamp.tags.iter().all(fresh)
    }

    /// Records the bump `seq` of `tags`. Tags come first, so that a reader seeing the
    /// new number also sees what it bumped.
    pub fn record(&self, seq: u64, tags: impl IntoIterator<Item = Tag>) {
        self.record_tags(seq, tags);
        self.seq.fetch_max(seq, Ordering::AcqRel);
    }

    /// Records the bump `seq` of `tags`, known before the bumps numbered below it may be
    /// (see `NearLease::record_own_bump`): [`TagClock::recorded_through`] stays where it
    /// is, and loads are stamped with `seq` from now on.
    pub fn record_ahead(&self, seq: u64, tags: impl IntoIterator<Item = Tag>) {
        self.record_tags(seq, tags);
        self.ahead.fetch_max(seq, Ordering::AcqRel);
    }

    fn record_tags(&self, seq: u64, tags: impl IntoIterator<Item = Tag>) {
        for tag in tags {
            self.bumped_at[tag.index()].fetch_max(seq, Ordering::AcqRel);
        }
    }

    /// The next number of the sequence, for a bump made here (callers serialize).
    pub fn next(&self) -> u64 {
        self.seq() + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::cache::tags::item_tags;

    #[test]
    fn an_entry_is_current_until_one_of_its_tags_is_bumped_after_its_load() {
        let clock = TagClock::default();
        let seven = Stamp {
            seq: clock.seq(),
            tags: item_tags(7),
        };
        clock.record(clock.next(), item_tags(8).iter().filter(|t| *t != ALL));
        assert!(clock.is_current(&seven), "another row's write");
        let after = Stamp {
            seq: clock.seq(),
            tags: item_tags(7),
        };
        clock.record(clock.next(), item_tags(7).iter().filter(|t| *t != ALL));
        assert!(!clock.is_current(&seven));
        assert!(!clock.is_current(&after));
        let late = Stamp {
            seq: clock.seq(),
            tags: item_tags(7),
        };
        assert!(clock.is_current(&late));
        clock.record(clock.next(), [ALL]);
        assert!(!clock.is_current(&late), "everything retired");
        // Recorded again, or out of order: nothing moves back.
        clock.record(1, [ALL]);
        assert_eq!(clock.seq(), 3);
        assert!(!clock.is_current(&late));
    }

    #[test]
    fn a_bump_recorded_ahead_of_its_turn_retires_without_moving_the_sequence() {
        let clock = TagClock::default();
        clock.record(1, []);
        let seven = Stamp {
            seq: clock.seq(),
            tags: item_tags(7),
        };
        clock.record_ahead(3, item_tags(7).iter().filter(|t| *t != ALL));
        assert!(!clock.is_current(&seven));
        assert_eq!(clock.recorded_through(), 1, "bump 2 is not recorded yet");
        let loaded_after = Stamp {
            seq: clock.seq(),
            tags: item_tags(7),
        };
        assert_eq!(loaded_after.seq, 3);
        assert!(
            clock.is_current(&loaded_after),
            "a load after the bump is current"
        );
        clock.record(2, item_tags(7).iter().filter(|t| *t != ALL));
        clock.record(3, item_tags(7).iter().filter(|t| *t != ALL));
        assert_eq!(clock.recorded_through(), 3);
        assert!(clock.is_current(&loaded_after));
    }
}
