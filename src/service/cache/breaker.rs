//! How the Redis backend stays out of the way when Redis fails: a circuit breaker that
//! skips Redis for a moment after a failure and then lets one request try it again,
//! the resync owed after any failure (a failure may have eaten an invalidation), and in
//! a cluster, the same per hash slot for entries.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long Redis is skipped after a failure.
pub const OPEN_FOR: Duration = Duration::from_secs(1);
/// How long one request has to try Redis again before another may.
const PROBE_FOR: Duration = Duration::from_secs(2);
const CLUSTER_SLOTS: usize = 16384;

pub struct Health {
    started: Instant,
    /// Until when (ms after `started`) Redis is skipped; 0 once a call succeeded since.
    open_until: AtomicU64,
    /// Until when one request is trying Redis again (the others still skip it).
    probe_until: AtomicU64,
    /// Cluster only: by hash slot, until when its entries are skipped.
    slots: Option<Box<[AtomicU64]>>,
    /// A call has succeeded at least once.
    ever_ok: AtomicBool,
    /// Counts failures: any of them may have eaten an invalidation, so nothing cached
    /// may be served until every generation has been bumped after it.
    failures: AtomicU64,
    /// The failure count as of the start of the last completed resync. A failure that
    /// happens during a resync stays owed, since the bumps may have preceded it.
    resynced_through: AtomicU64,
}

impl Health {
    pub fn new(cluster: bool) -> Health {
        Health {
            started: Instant::now(),
            open_until: AtomicU64::new(0),
            probe_until: AtomicU64::new(0),
            slots: cluster.then(|| (0..CLUSTER_SLOTS).map(|_| AtomicU64::new(0)).collect()),
            ever_ok: AtomicBool::new(false),
            failures: AtomicU64::new(0),
            resynced_through: AtomicU64::new(0),
        }
    }

    fn millis(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn later(&self, by: Duration) -> u64 {
        self.millis() + u64::try_from(by.as_millis()).unwrap_or(u64::MAX / 2)
    }

    /// True while Redis is to be skipped. Once the breaker's pause is over, one caller
    /// at a time gets `false` and tries Redis; the rest skip it until that try succeeds.
    pub fn skipping(&self) -> bool {
        let open_until = self.open_until.load(Ordering::Acquire);
        if open_until == 0 {
            return false;
        }
        let now = self.millis();
        if now < open_until {
            return true;
        }
        let probe_until = self.probe_until.load(Ordering::Acquire);
        let claimed = now >= probe_until
            && self
                .probe_until
                .compare_exchange(
                    probe_until,
                    self.later(PROBE_FOR),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok();
        !claimed
    }

    /// True while the breaker is open or half-open, without claiming the try.
    pub fn is_open(&self) -> bool {
        self.open_until.load(Ordering::Acquire) != 0
    }

    pub fn succeeded(&self) {
        self.ever_ok.store(true, Ordering::Relaxed);
        if self.open_until.load(Ordering::Acquire) != 0 {
            self.open_until.store(0, Ordering::Release);
            self.probe_until.store(0, Ordering::Release);
        }
    }

    pub fn failed(&self) {
        self.failures.fetch_add(1, Ordering::AcqRel);
        self.open_until
            .store(self.later(OPEN_FOR).max(1), Ordering::Release);
        self.probe_until.store(0, Ordering::Release);
    }

    pub fn ever_succeeded(&self) -> bool {
        self.ever_ok.load(Ordering::Relaxed)
    }

    /// A failure happened since the last completed resync.
    pub fn owed(&self) -> bool {
        self.resynced_through.load(Ordering::Acquire) < self.failures.load(Ordering::Acquire)
    }

    /// The failure count a resync starting now would pay off.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Acquire)
    }

    /// A resync that started at `failures` completed; true if it paid something off.
    pub fn resynced(&self, failures: u64) -> bool {
        self.resynced_through.fetch_max(failures, Ordering::AcqRel) < failures
    }

    /// True in a cluster, where entries have a breaker per hash slot.
    pub fn per_slot(&self) -> bool {
        self.slots.is_some()
    }

    /// Cluster only: whether entries of `slot` are to be skipped.
    pub fn slot_skipped(&self, slot: u16) -> bool {
        self.slots
            .as_ref()
            .and_then(|slots| slots.get(usize::from(slot)))
            .is_some_and(|until| until.load(Ordering::Acquire) > self.millis())
    }

    pub fn slot_failed(&self, slot: u16) {
        if let Some(until) = self.slots.as_ref().and_then(|s| s.get(usize::from(slot))) {
            until.store(self.later(OPEN_FOR), Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_the_pause_one_caller_tries_and_the_rest_skip() {
        let health = Health::new(false);
        assert!(!health.skipping());
        health.failed();
        assert!(health.skipping() && health.owed());
        std::thread::sleep(Duration::from_millis(3));
        health.open_until.store(1, Ordering::Release); // the pause is over
        assert!(!health.skipping(), "the first caller tries Redis again");
        assert!(health.skipping(), "the others keep skipping it meanwhile");
        health.succeeded();
        assert!(!health.skipping() && !health.is_open());
        assert!(health.owed(), "still owed until a resync");
        assert!(health.resynced(health.failures()));
        assert!(!health.owed());
    }

    #[test]
    fn a_try_that_never_reports_back_is_given_to_another_caller() {
        let health = Health::new(false);
        health.failed();
        std::thread::sleep(Duration::from_millis(3));
        health.open_until.store(1, Ordering::Release);
        assert!(!health.skipping());
        health.probe_until.store(1, Ordering::Release); // that try's time is up
        assert!(!health.skipping());
    }
}
