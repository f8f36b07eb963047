//! The counters every process adds to in Redis (hits and misses per level, requests,
//! database queries), so that `cache-metrics` and the dashboard see all servers at
//! once: each process counts in memory and adds what is new once a second, so that a
//! hit writes nothing.

use std::sync::Arc;
use std::time::Duration;

use redis::RedisResult;

use crate::metrics::{Counts, Metrics};
use crate::redis_link::{RESPONSE_TIMEOUT, RedisConnection};
use crate::service::cache::keys::KeySpace;

/// The counts already added to Redis, so each flush adds only what is new.
pub(super) struct Flushed {
    /// The shared counters' keys, in the order of `Counts::values`.
    keys: Vec<String>,
    counts: Counts,
    /// The hash of reads per replica, and what each replica's count was when added.
    replica_reads: String,
    replicas: Vec<u64>,
}

impl Flushed {
    pub(super) fn new(keys: &KeySpace) -> Flushed {
        Flushed {
            keys: keys.shared_counters(),
            counts: Counts::default(),
            replica_reads: keys.replica_reads(),
            replicas: Vec::new(),
        }
    }

    pub(super) async fn flush(&mut self, conn: &mut RedisConnection, metrics: &Metrics) {
        let now = metrics.counts();
        let new = now.since(&self.counts);
        let replicas = metrics.reads.replicas();
        let replica_reads: Vec<u64> = replicas.iter().map(|replica| replica.reads()).collect();
        if new == Counts::default() && replica_reads == self.replicas {
            return;
        }
        let mut pipe = redis::pipe();
        for (key, count) in self.keys.iter().zip(new.values()) {
            if count > 0 {
                pipe.incr(key, count).ignore();
            }
        }
        for (i, replica) in replicas.iter().enumerate() {
            let added = replica_reads[i].saturating_sub(self.replicas.get(i).copied().unwrap_or(0));
            if added > 0 {
                pipe.hincr(&self.replica_reads, &replica.name, added)
                    .ignore();
            }
        }
        let sent = tokio::time::timeout(RESPONSE_TIMEOUT, pipe.query_async::<()>(conn)).await;
        if let Ok(Ok(())) = sent {
            self.counts = now;
            self.replicas = replica_reads;
        }
    }
}

/// Every process's reads per replica, by `host:port`.
pub(super) async fn read_replica_reads(
    conn: &mut RedisConnection,
    keys: &KeySpace,
) -> RedisResult<Vec<(String, u64)>> {
    redis::cmd("HGETALL")
        .arg(keys.replica_reads())
        .query_async(conn)
        .await
}

pub(super) async fn read(conn: &mut RedisConnection, keys: &KeySpace) -> RedisResult<Counts> {
    let values: Vec<Option<u64>> = redis::cmd("MGET")
        .arg(keys.shared_counters())
        .query_async(conn)
        .await?;
    Ok(Counts::from_values(&values))
}

/// How often a server adds its counts to the shared ones (`cache-metrics` lags by at
/// most this much).
const FLUSH_COUNTS_EVERY: Duration = Duration::from_secs(1);

pub(super) async fn flush_forever(
    mut conn: RedisConnection,
    keys: KeySpace,
    metrics: Arc<Metrics>,
) {
    let mut flushed = Flushed::new(&keys);
    let mut every = tokio::time::interval(FLUSH_COUNTS_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        flushed.flush(&mut conn, &metrics).await;
    }
}
