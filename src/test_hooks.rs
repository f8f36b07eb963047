//! Pause points that let tests reproduce races deterministically: a test arms a point,
//! waits until a request reaches it, acts (writes, reads), then releases the request.
//!
//! They exist only with the `test-hooks` feature, which the integration tests turn on
//! (a dev-dependency of the crate on itself); in any other build [`pause!`] expands to
//! nothing and nothing can arm a point.

#[cfg(feature = "test-hooks")]
pub use armed::{PANIC_ONCE_ENV, Pause, TestHooks};

/// `pause!(hooks, Point)`: the task stops there if a test armed the point. Without the
/// `test-hooks` feature it expands to nothing, so release builds carry no hooks at all:
/// no field, no parameter, no check.
#[cfg(feature = "test-hooks")]
macro_rules! pause {
    ($hooks:expr, $point:ident) => {
        $hooks.pause($crate::test_hooks::Point::$point).await
    };
}

#[cfg(not(feature = "test-hooks"))]
macro_rules! pause {
    ($hooks:expr, $point:ident) => {
        ()
    };
}

pub(crate) use pause;

#[cfg(feature = "test-hooks")]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Point {
    /// A reader has loaded from the database and is about to store in the cache.
    BeforeCacheStore,
    /// A writer has committed and is about to invalidate.
    BeforeInvalidate,
    /// A PostgreSQL write has done its statements and is about to send COMMIT.
    BeforeCommit,
    /// A list page of a text search has read its rows and is about to count the
    /// matches; any other list page is about to read both in one statement.
    BetweenRowsAndCount,
    /// The PostgreSQL change listener is about to (re)connect.
    BeforeListen,
    /// A server heard a new generation and is about to take it on and confirm it
    /// (near-cache lease).
    BeforeNearConfirm,
    /// A SQLite read is on its blocking thread, inside its read transaction.
    InsideSqliteCall,
    /// A SQLite write is inside its transaction, before its statements.
    InsideSqliteWrite,
    /// A request has reached the service layer (a read, or a write's own task).
    InService,
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

    /// One armed pause: the first arrival at its point stops until released (or, armed
    /// with [`TestHooks::arm_panic`], panics there).
    pub struct Pause {
        reached: Semaphore,
        released: Semaphore,
        panics: bool,
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

    /// Set in a test build's environment, the first request to reach the service layer
    /// panics, so tests of the real binary can see how a panic is answered and logged.
    pub const PANIC_ONCE_ENV: &str = "LISTINGS_TEST_PANIC_ONCE";

    impl TestHooks {
        pub fn new() -> TestHooks {
            let hooks = TestHooks::default();
            if std::env::var_os(PANIC_ONCE_ENV).is_some() {
                hooks.arm_panic(Point::InService);
            }
            hooks
        }

        /// The next task to reach `point` stops there.
        pub fn arm(&self, point: Point) -> Arc<Pause> {
            self.arm_as(point, false)
        }

        /// The next task to reach `point` panics there.
        pub fn arm_panic(&self, point: Point) -> Arc<Pause> {
            self.arm_as(point, true)
        }

        pub fn is_armed(&self, point: Point) -> bool {
            self.any_armed.load(Ordering::Acquire)
                && self
                    .armed
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .contains_key(&point)
        }

        fn arm_as(&self, point: Point, panics: bool) -> Arc<Pause> {
            let pause = Arc::new(Pause {
                reached: Semaphore::new(0),
                released: Semaphore::new(0),
                panics,
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
                if pause.panics {
                    panic!("test-only panic at {point:?}");
                }
                if let Ok(permit) = pause.released.acquire().await {
                    permit.forget();
                }
            }
        }
    }
}
