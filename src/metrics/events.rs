//! The invalidations of the last minutes, each with what caused it, for the dashboard's
//! markers; and how many there were, for `/metrics`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// How long events are kept: the dashboard's window.
pub const KEPT_FOR: Duration = Duration::from_secs(15 * 60);
/// A burst of writes keeps the most recent ones.
const MOST_KEPT: usize = 2000;
/// Causes come from writes and other processes: bounded so a log line stays a line.
const MOST_CAUSE_CHARS: usize = 160;

/// Who made the change an invalidation answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// A write through this process.
    ThisProcess,
    /// A write through another `listings` process (a server, the CLI).
    OtherProcess,
    /// A change made outside `listings` (psql, a migration).
    OutOfBand,
    /// Everything retired because a change may have been missed (a listener that
    /// reconnected, a cache that came back).
    Recovery,
}

/// What an invalidation answers: `property 7 created`, by this process.
#[derive(Clone, Copy, Debug)]
pub struct Cause<'a> {
    pub what: &'a str,
    pub origin: Origin,
}

impl<'a> Cause<'a> {
    pub fn this_process(what: &'a str) -> Cause<'a> {
        Cause {
            what,
            origin: Origin::ThisProcess,
        }
    }

    pub fn recovery(what: &'a str) -> Cause<'a> {
        Cause {
            what,
            origin: Origin::Recovery,
        }
    }
}

impl Origin {
    pub fn name(self) -> &'static str {
        match self {
            Origin::ThisProcess => "this_process",
            Origin::OtherProcess => "other_process",
            Origin::OutOfBand => "out_of_band",
            Origin::Recovery => "recovery",
        }
    }

    pub fn from_name(name: &str) -> Option<Origin> {
        [
            Origin::ThisProcess,
            Origin::OtherProcess,
            Origin::OutOfBand,
            Origin::Recovery,
        ]
        .into_iter()
        .find(|origin| origin.name() == name)
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Invalidation {
    /// Numbers this process's invalidations from 1, so a poller asks for what follows
    /// the last one it saw (times can repeat within a millisecond).
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    pub cause: String,
    pub origin: Origin,
}

#[derive(Debug, Default)]
pub struct InvalidationLog {
    recent: Mutex<VecDeque<Invalidation>>,
    total: AtomicU64,
}

pub fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |since| {
        u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
    })
}

impl InvalidationLog {
    pub fn record(&self, cause: &str, origin: Origin) {
        let now = unix_ms(SystemTime::now());
        let cause: String = cause
            .chars()
            .filter(|c| !c.is_control())
            .take(MOST_CAUSE_CHARS)
            .collect();
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        // Under the lock, so numbers follow the order of the list.
        let seq = self.total.fetch_add(1, Ordering::Relaxed) + 1;
        let oldest_kept = now.saturating_sub(u64::try_from(KEPT_FOR.as_millis()).unwrap_or(0));
        while recent
            .front()
            .is_some_and(|event| event.at_ms < oldest_kept || recent.len() >= MOST_KEPT)
        {
            recent.pop_front();
        }
        recent.push_back(Invalidation {
            seq,
            at_ms: now,
            cause,
            origin,
        });
    }

    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// The events kept after the one numbered `after_seq`, oldest first.
    pub fn after(&self, after_seq: u64) -> Vec<Invalidation> {
        let recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        recent
            .iter()
            .filter(|event| event.seq > after_seq)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_kept_with_their_cause_bounded() {
        let log = InvalidationLog::default();
        log.record("property 7 created", Origin::ThisProcess);
        log.record(&format!("x\n{}", "y".repeat(500)), Origin::OutOfBand);
        let events = log.after(0);
        assert_eq!(log.total(), 2);
        assert_eq!((events[0].seq, events[1].seq), (1, 2));
        assert_eq!(events[0].cause, "property 7 created");
        assert_eq!(events[1].cause.chars().count(), MOST_CAUSE_CHARS);
        assert!(!events[1].cause.contains('\n'));
        assert!(log.after(2).is_empty());
        assert_eq!(log.after(1).len(), 1);
        for i in 0..MOST_KEPT + 10 {
            log.record(&format!("write {i}"), Origin::OtherProcess);
        }
        let kept = log.after(0);
        assert_eq!(kept.len(), MOST_KEPT);
        assert_eq!(kept.last().map(|e| e.seq), Some(log.total()));
        assert_eq!(log.total(), 2 + MOST_KEPT as u64 + 10);
    }
}
