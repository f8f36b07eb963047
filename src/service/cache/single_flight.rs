//! Concurrent misses for one key in one process share one load: the first caller holds
//! the key's lock while it loads and stores; the others wait, then find the stored value.
//! When the first load stored nothing (an error, a 404, a refused store), the waiters
//! must load for themselves, and they do so together rather than one after another.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

#[derive(Default)]
pub struct SingleFlight {
    in_flight: Mutex<HashMap<String, Weak<AsyncMutex<()>>>>,
}

impl SingleFlight {
    /// Waits for whoever is loading `key`, then returns a guard that makes this caller
    /// the loader until it is dropped, and whether it had to wait for another loader.
    pub async fn lock(&self, key: &str) -> (OwnedMutexGuard<()>, bool) {
        let lock = self.flight(key);
        match lock.clone().try_lock_owned() {
            Ok(guard) => (guard, false),
            Err(_) => (lock.lock_owned().await, true),
        }
    }

    /// The guard of [`SingleFlight::lock`] if nobody else in this process holds `key`.
    pub fn try_lock(&self, key: &str) -> Option<OwnedMutexGuard<()>> {
        self.flight(key).try_lock_owned().ok()
    }

    fn flight(&self, key: &str) -> Arc<AsyncMutex<()>> {
        let mut in_flight = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match in_flight.get(key).and_then(Weak::upgrade) {
            Some(lock) => lock,
            None => {
                // Finished flights leave dead entries; drop them before adding one.
                in_flight.retain(|_, lock| lock.strong_count() > 0);
                let lock = Arc::new(AsyncMutex::new(()));
                in_flight.insert(key.to_owned(), Arc::downgrade(&lock));
                lock
            }
        }
    }
}
