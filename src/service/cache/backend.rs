//! What a cache backend does, whichever it is (the in-process one or Redis): `Cache`
//! holds one as a trait object and never asks which, as svix's `CacheBehavior`.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;

use crate::metrics::events::Cause;
use crate::metrics::{Counts, HitsMisses};
use crate::service::cache::clock::{Stamp, TagClock};
use crate::service::cache::keys::EntryKey;
use crate::service::cache::tags::TagSet;
use crate::service::wal::WalPosition;

/// A backend's answer, still to come.
pub type Pending<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Outcome of a lookup.
pub enum Lookup {
    /// A current entry.
    Hit { value: Bytes, stamp: Stamp },
    /// `seq`: what a value loaded now is stamped with. `may_fill`: this caller holds the
    /// key's fill lock (or needs none), so it loads. `retired`: a value that a write
    /// retired stood in the entry.
    Miss {
        seq: u64,
        may_fill: bool,
        retired: bool,
    },
    /// The backend is failing or not yet trusted again: go to the database.
    Unavailable,
}

/// A lookup's claim on the entry's fill lock, taken where no current value stands.
#[derive(Clone, Copy, Debug)]
pub struct FillClaim {
    /// How long the lock lasts.
    pub ttl: Duration,
    /// The sequence of the value this process last held for the entry (its near-cache's
    /// copy), which a write has retired since: the lookup takes the lock in its own round
    /// trip wherever that value, an earlier one or none stands, instead of reading the
    /// value first and claiming the lock in a second.
    pub retired_seen: Option<u64>,
}

/// A value loaded for an entry, with the stamp of its load.
pub struct Fill<'a> {
    pub entry: &'a EntryKey,
    pub stamp: Stamp,
    pub value: Bytes,
    pub ttl: Duration,
}

pub trait CacheBackend: Send + Sync {
    /// For the start-up log line; no secrets.
    fn describe(&self) -> String;

    /// Names the cache, for tagging database writes: processes with equal tags share a
    /// cache, so a write one of them invalidated needs nothing more from the others.
    fn origin_tag(&self) -> String;

    /// Whether other processes use the same cache (and retire its entries themselves).
    fn is_shared(&self) -> bool;

    /// Whether lookups take a fill lock other processes heed (then a miss that holds it
    /// loads at once).
    fn shares_fills(&self) -> bool {
        false
    }

    /// What the dashboard shows of the backend.
    fn status(&self) -> CacheBackendStatus;

    /// The clock that says which ready responses this process may serve from its
    /// memory without asking anyone, if any.
    fn near_clock(&self) -> Option<&TagClock>;

    /// A server's background work beside its requests.
    fn start_server_tasks(
        &self,
        #[cfg(feature = "test-hooks")] _hooks: std::sync::Arc<crate::test_hooks::TestHooks>,
    ) {
    }

    /// A command's counts, added to the shared ones before it exits.
    fn flush_counts(&self) -> Pending<'_, ()> {
        Box::pin(async {})
    }

    /// The entry if it is current. With `fill_lock`, a miss also tries to take the key's
    /// fill lock.
    fn lookup<'a>(
        &'a self,
        entry: &'a EntryKey,
        fill_lock: Option<FillClaim>,
    ) -> Pending<'a, Lookup>;

    /// Ends a fill lock early (the load failed), so that others need not wait it out.
    fn release_fill_lock<'a>(&'a self, _entry: &'a EntryKey) -> Pending<'a, ()> {
        Box::pin(async {})
    }

    /// Stores each fill unless a write has already retired it (with Redis, all in one
    /// round trip where the deployment allows); whether each was stored.
    fn store_all<'a>(&'a self, fills: Vec<Fill<'a>>) -> Pending<'a, Vec<bool>>;

    /// Retires every entry that shares a tag with `tags`; false when that could not
    /// reach the cache. `written_at`: the WAL position of the write's commit, which
    /// raises the replicas' watermark (`None`: not known, which makes it unknown).
    fn bump<'a>(
        &'a self,
        tags: &'a TagSet,
        cause: Cause<'a>,
        written_at: Option<WalPosition>,
    ) -> Pending<'a, bool>;

    /// The replicas' watermark; `None` where there is none (in process) or when it
    /// cannot be read now.
    fn watermark(&self) -> Pending<'_, Option<Watermark>> {
        Box::pin(async { None })
    }

    /// Makes an unknown watermark known again at `primary`, a position the primary
    /// reported after `seen` was read; false if a bump made it unknown since.
    fn heal_watermark<'a>(
        &'a self,
        _seen: &'a Watermark,
        _primary: WalPosition,
    ) -> Pending<'a, bool> {
        Box::pin(async { false })
    }

    /// The sums of every process's counters, when they are shared and readable now.
    fn shared_counts(&self) -> Pending<'_, Option<Counts>> {
        Box::pin(async { None })
    }

    /// The numbers `cache-metrics` reports, read from another process: `None` when the
    /// cache is not shared.
    fn shared_stats(&self) -> Pending<'_, anyhow::Result<Option<RedisStats>>> {
        Box::pin(async { Ok(None) })
    }
}

/// The replicas' watermark as the cache holds it (see `lua::BUMP`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watermark {
    /// Every acknowledged write committed at or before it; `None` while unknown.
    pub known: Option<WalPosition>,
    /// The sequence it was read at: a heal must find it unchanged.
    pub seq: String,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct CacheBackendStatus {
    pub kind: &'static str,
    pub redis: Option<RedisStatus>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct RedisStatus {
    /// Without its password.
    pub url: String,
    /// `connected`, `connecting`, `circuit open` (skipped after a failure) or
    /// `resyncing` (answering again, everything to be retired first).
    pub state: &'static str,
    /// This server serves ready responses from its memory.
    pub near_lease: bool,
    #[serde(flatten)]
    pub topology: crate::redis_link::Topology,
}

pub struct RedisStats {
    /// Server-wide, from `INFO stats` (every master's, in a cluster).
    pub keyspace: HitsMisses,
    /// Every `listings` process's counters summed, as last flushed.
    pub shared: Counts,
    /// Every process's reads per replica (`host:port`), as last flushed.
    pub replica_reads: Vec<(String, u64)>,
}
