//! Pause points that let tests reproduce races deterministically: a test arms a point,
//! waits until a request reaches it, acts (writes, reads), then releases the request.
//!
//! They exist only with the `test-hooks` feature, which the integration tests turn on
//! (a dev-dependency of the crate on itself); in any other build `pause` is an empty
//! inline function and nothing can arm a point.

#[cfg(feature = "test-hooks")]
pub use armed::{Pause, TestHooks};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Point {
    /// A reader has loaded from the database and is about to store in the cache.
    BeforeCacheStore,
    /// A writer has committed and is about to invalidate.
    BeforeInvalidate,
    /// A PostgreSQL write has done its statements and is about to send COMMIT.
    BeforeCommit,
    /// A list page has read its rows and is about to count the matches.
    BetweenRowsAndCount,
    /// The PostgreSQL change listener is about to (re)connect.
    BeforeListen,
    /// A server heard a new generation and is about to take it on and confirm it
    /// (near-cache lease).
    BeforeNearConfirm,
}

/// Without the `test-hooks` feature: nothing to arm, nothing to wait for.
#[cfg(not(feature = "test-hooks"))]
#[derive(Default)]
pub struct TestHooks;

#[cfg(not(feature = "test-hooks"))]
impl TestHooks {
    #[inline(always)]
    pub async fn pause(&self, _point: Point) {}
}

#[cfg(feature = "test-hooks")]
mod armed {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex, PoisonError};

    use tokio::sync::Semaphore;

    use super::Point;

    #[derive(Default)]
    pub struct TestHooks {
        any_armed: AtomicBool,
        armed: Mutex<HashMap<Point, Arc<Pause>>>,
    }

    /// One armed pause: the first arrival at its point stops until released.
    pub struct Pause {
        reached: Semaphore,
        released: Semaphore,
    }

    impl Pause {
        /// Waits until a task has stopped at the point.
        pub async fn reached(&self) {
            if let Ok(permit) = self.reached.acquire().await {
                permit.forget();
            }
        }

        /// Lets the stopped task go on.
        pub fn release(&self) {
            self.released.add_permits(1);
        }
    }

    impl TestHooks {
        /// The next task to reach `point` stops there.
        pub fn arm(&self, point: Point) -> Arc<Pause> {
            let pause = Arc::new(Pause {
                reached: Semaphore::new(0),
                released: Semaphore::new(0),
            });
            self.armed
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(point, pause.clone());
            self.any_armed.store(true, Ordering::Release);
            pause
        }

        pub async fn pause(&self, point: Point) {
            if !self.any_armed.load(Ordering::Acquire) {
                return;
            }
            let pause = self
                .armed
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&point);
            if let Some(pause) = pause {
                pause.reached.add_permits(1);
                if let Ok(permit) = pause.released.acquire().await {
                    permit.forget();
                }
            }
        }
    }
}
