//! The dashboard's last 15 minutes: once a second the counters are read and what
//! changed since the last second is kept as one sample (rates, latency quantiles, hit
//! ratios per level, and in Redis mode the same for every server together).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::metrics::events::{KEPT_FOR, unix_ms};
use crate::metrics::latency::LatencySnapshot;
use crate::metrics::{CacheKind, Counts};
use crate::service::App;

pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);
const SAMPLES_KEPT: usize = (KEPT_FOR.as_secs() / SAMPLE_EVERY.as_secs()) as usize;

/// One second of one server, and of all of them.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    /// End of the second, in milliseconds since the Unix epoch.
    pub t: u64,
    pub this: Rates,
    /// Every server's counters summed (Redis mode; each server adds its own once a
    /// second, so this lags by up to a second).
    pub all: Option<Rates>,
    /// The cache backend's state at the end of the second (see `RedisStatus`).
    pub cache_state: &'static str,
    pub cache_errors: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Rates {
    pub requests: u64,
    pub rps: f64,
    /// Latency quantiles of the requests of that second; this server only.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub db_queries: u64,
    pub db_qps: f64,
    /// Hits / lookups per level, `None` in a second without lookups.
    pub hit_ratio: HitRatios,
}

#[derive(Clone, Debug, Serialize)]
pub struct HitRatios {
    pub view: Option<f64>,
    pub all_properties: Option<f64>,
    pub queries: Option<f64>,
    pub items: Option<f64>,
}

impl HitRatios {
    fn of(counts: &Counts) -> HitRatios {
        let ratio = |kind: CacheKind| counts.kind(kind).ratio_if_any();
        HitRatios {
            view: ratio(CacheKind::View),
            all_properties: ratio(CacheKind::AllProperties),
            queries: ratio(CacheKind::Queries),
            items: ratio(CacheKind::Items),
        }
    }
}

impl Rates {
    fn of(counts: &Counts, latency: Option<&LatencySnapshot>, seconds: f64) -> Rates {
        let per_second = |n: u64| {
            if seconds > 0.0 {
                n as f64 / seconds
            } else {
                0.0
            }
        };
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        Rates {
            requests: counts.requests,
            rps: per_second(counts.requests),
            p50_ms: latency.and_then(|l| l.quantile(0.5)).map(ms),
            p99_ms: latency.and_then(|l| l.quantile(0.99)).map(ms),
            db_queries: counts.db_queries,
            db_qps: per_second(counts.db_queries),
            hit_ratio: HitRatios::of(counts),
        }
    }
}

#[derive(Default)]
pub struct History {
    samples: Mutex<VecDeque<Sample>>,
}

impl History {
    /// The samples that end after `after_ms`, oldest first.
    pub fn since(&self, after_ms: u64) -> Vec<Sample> {
        let samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        samples.iter().filter(|s| s.t > after_ms).cloned().collect()
    }

    fn push(&self, sample: Sample) {
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        if samples.len() >= SAMPLES_KEPT {
            samples.pop_front();
        }
        samples.push_back(sample);
    }
}

/// What one sample reads: the difference between two readings is a second.
struct Reading {
    at: Instant,
    counts: Counts,
    latency: LatencySnapshot,
    shared: Option<Counts>,
    cache_errors: u64,
}

impl Reading {
    async fn of(app: &App) -> Reading {
        Reading {
            at: Instant::now(),
            counts: app.metrics.counts(),
            latency: app.metrics.latency(),
            shared: app.shared_counts().await,
            cache_errors: app.metrics.cache_errors(),
        }
    }
}

/// Samples `app` into `history` once a second, for as long as the server runs.
pub async fn keep(app: Arc<App>, history: Arc<History>) {
    let mut every = tokio::time::interval(SAMPLE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    let mut previous = Reading::of(&app).await;
    loop {
        every.tick().await;
        let now = Reading::of(&app).await;
        let seconds = now.at.duration_since(previous.at).as_secs_f64();
        let latency = now.latency.since(&previous.latency);
        let all = match (&now.shared, &previous.shared) {
            (Some(now), Some(before)) => Some(Rates::of(&now.since(before), None, seconds)),
            _ => None,
        };
        let cache_state = app.cache_status().redis.map_or("in-process", |r| r.state);
        history.push(Sample {
            t: unix_ms(SystemTime::now()),
            this: Rates::of(&now.counts.since(&previous.counts), Some(&latency), seconds),
            all,
            cache_state,
            cache_errors: now.cache_errors.saturating_sub(previous.cache_errors),
        });
        previous = now;
    }
}
