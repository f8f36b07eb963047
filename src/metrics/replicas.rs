//! Where cache misses were read (the primary or a replica), why a read that could have
//! gone to a replica went to the primary, and each replica's standing and lag.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use serde::Serialize;

/// Why a read went to the primary although replicas are configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fallback {
    /// The watermark is not known (Redis cannot say, or a write's position was not).
    WatermarkUnknown,
    /// The replica had not replayed every acknowledged write.
    BehindWatermark,
    /// Its replay trails the primary by more than `--replica-max-lag`.
    Lagging,
    /// It does not answer, or has not been checked yet.
    Down,
    /// It is not a standby of this primary (promoted, or another cluster).
    NotAReplica,
    /// The read on the replica failed or timed out, and was made again on the primary.
    Failed,
}

impl Fallback {
    pub const ALL: [Fallback; 6] = [
        Fallback::WatermarkUnknown,
        Fallback::BehindWatermark,
        Fallback::Lagging,
        Fallback::Down,
        Fallback::NotAReplica,
        Fallback::Failed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fallback::WatermarkUnknown => "watermark_unknown",
            Fallback::BehindWatermark => "behind_watermark",
            Fallback::Lagging => "lagging",
            Fallback::Down => "down",
            Fallback::NotAReplica => "not_a_replica",
            Fallback::Failed => "failed",
        }
    }
}

/// A replica's standing, as its last check (or failed read) left it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Standing {
    /// Not checked yet: not used.
    Unchecked,
    Serving,
    Lagging,
    Down,
    NotAReplica,
}

impl Standing {
    pub fn name(self) -> &'static str {
        match self {
            Standing::Unchecked => "unchecked",
            Standing::Serving => "serving",
            Standing::Lagging => "lagging",
            Standing::Down => "down",
            Standing::NotAReplica => "not a replica",
        }
    }

    /// Why a read skipped a replica in this standing.
    pub fn fallback(self) -> Fallback {
        match self {
            Standing::Lagging => Fallback::Lagging,
            Standing::NotAReplica => Fallback::NotAReplica,
            Standing::Unchecked | Standing::Down | Standing::Serving => Fallback::Down,
        }
    }
}

/// What operators see of one replica.
#[derive(Clone, Debug, Serialize)]
pub struct ReplicaState {
    pub standing: Standing,
    /// Why it is not serving, in words.
    pub why: Option<String>,
    /// How long ago the primary had WAL this replica has not replayed yet.
    pub lag_seconds: Option<f64>,
    pub lag_bytes: Option<u64>,
    /// The last WAL position it reported having replayed.
    pub replayed: Option<String>,
}

/// One replica's reads and state.
#[derive(Debug)]
pub struct ReplicaStatus {
    /// `host:port`, never with credentials.
    pub name: String,
    reads: AtomicU64,
    state: Mutex<ReplicaState>,
}

impl ReplicaStatus {
    pub fn record_read(&self) {
        self.reads.fetch_add(1, Ordering::Relaxed);
    }

    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    pub fn state(&self) -> ReplicaState {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn standing(&self) -> Standing {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .standing
    }

    pub fn set_state(&self, state: ReplicaState) {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = state;
    }

    /// A read failed: skipped until its next check says otherwise; the lag shown stays.
    pub fn set_down(&self, why: String) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.standing = Standing::Down;
        state.why = Some(why);
    }
}

/// Reads by where they went, for `/metrics`, the dashboard and the shared counters.
#[derive(Debug, Default)]
pub struct ReadRouting {
    primary: AtomicU64,
    fallbacks: [AtomicU64; Fallback::ALL.len()],
    replicas: OnceLock<Vec<Arc<ReplicaStatus>>>,
}

/// The counters of [`ReadRouting`] that add up across processes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReadCounts {
    pub primary: u64,
    pub replicas: u64,
    pub fallbacks: [u64; Fallback::ALL.len()],
}

impl ReadRouting {
    /// The replicas of this process, named once when the database layer is built.
    pub fn register(&self, names: &[String]) -> Vec<Arc<ReplicaStatus>> {
        let made = self.replicas.get_or_init(|| {
            names
                .iter()
                .map(|name| {
                    Arc::new(ReplicaStatus {
                        name: name.clone(),
                        reads: AtomicU64::new(0),
                        state: Mutex::new(ReplicaState {
                            standing: Standing::Unchecked,
                            why: Some("not checked yet".to_owned()),
                            lag_seconds: None,
                            lag_bytes: None,
                            replayed: None,
                        }),
                    })
                })
                .collect()
        });
        made.clone()
    }

    pub fn replicas(&self) -> &[Arc<ReplicaStatus>] {
        self.replicas.get().map_or(&[], Vec::as_slice)
    }

    pub fn record_primary_read(&self, fallback: Option<Fallback>) {
        self.primary.fetch_add(1, Ordering::Relaxed);
        if let Some(fallback) = fallback {
            self.fallbacks[fallback as usize].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn counts(&self) -> ReadCounts {
        ReadCounts {
            primary: self.primary.load(Ordering::Relaxed),
            replicas: self.replicas().iter().map(|replica| replica.reads()).sum(),
            fallbacks: std::array::from_fn(|i| self.fallbacks[i].load(Ordering::Relaxed)),
        }
    }
}

impl ReadCounts {
    pub fn fallback(&self, reason: Fallback) -> u64 {
        self.fallbacks[reason as usize]
    }
}

/// Seconds with millisecond precision, for the lag operators read.
pub fn lag_seconds(lag: Duration) -> f64 {
    (lag.as_millis() as f64) / 1000.0
}
