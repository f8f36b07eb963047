//! With Redis, a server may serve ready responses from its own memory only while it is
//! sure no acknowledged write has retired them, without asking Redis on every request.
//! It holds a lease for that:
//!
//! - it subscribes to the channel bumps are published on, then copies the whole clock,
//!   then registers its lease (`lease:<id>` in the registry hash, with an expiry in
//!   Redis time) and renews it every third of [`LEASE`];
//! - it keeps a mirror of Redis's clock (see `clock`): each bump it hears is recorded
//!   before it confirms it (`ack:<id>`: every bump up to that number is recorded), so
//!   once confirmed it never serves what the bump retired. A bump whose number skips one
//!   it did not hear, or a renewal that finds Redis ahead, copies the whole clock again;
//! - a writer's acknowledgement waits until every live lease has confirmed its bump
//!   (see `RedisCache::bump`); a server that stops confirming (dead, frozen, cut off)
//!   stops being waited for when its lease expires, and by then it has stopped serving
//!   from memory itself: its own deadline ends earlier than Redis's;
//! - whenever it is unsure (subscription lost, renewal failed, deadline passed) it
//!   serves from Redis or the database instead, and starts over.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt as _;
use redis::Script;
use tokio::time::Instant;

use crate::config::RedisNode;
use crate::metrics::Metrics;
use crate::metrics::events::{Cause, Origin};
use crate::redis_link::RedisLink;
use crate::service::cache::clock::TagClock;
use crate::service::cache::keys::{KeySpace, Resource};
use crate::service::cache::lua::{Scripts, initial_seq};
use crate::service::cache::tags::{Tag, TagSet};
use crate::test_hooks::pause;

/// How long a lease lasts in Redis: the longest a writer waits for a server that
/// stopped confirming.
pub const LEASE: Duration = Duration::from_secs(2);
/// A server stops trusting its lease this much before Redis lets it expire.
const MARGIN: Duration = Duration::from_millis(300);
const RENEW_EVERY: Duration = Duration::from_millis(600);
const CALL_TIMEOUT: Duration = Duration::from_millis(500);
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The one clock there is: tags name properties and their filters.
pub const CLOCK_OF: Resource = Resource::Properties;

/// This server's lease and its mirror of Redis's clock.
pub struct NearLease {
    id: String,
    started: std::time::Instant,
    /// Every bump up to its sequence is recorded (and others may be).
    clock: TagClock,
    /// Milliseconds after `started` until which serving from memory is allowed: set by
    /// a renewal over a live subscription, 0 once either is lost.
    valid_until: AtomicU64,
}

impl Default for NearLease {
    fn default() -> Self {
        NearLease {
            id: format!("{:016x}", rand::random::<u64>()),
            started: std::time::Instant::now(),
            clock: TagClock::default(),
            valid_until: AtomicU64::new(0),
        }
    }
}

impl NearLease {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The mirror of Redis's clock, while the lease vouches for it: every bump
    /// acknowledged to a writer is recorded in it.
    pub fn clock(&self) -> Option<&TagClock> {
        let live = self.now_ms() < self.valid_until.load(Ordering::Acquire);
        live.then_some(&self.clock)
    }

    /// This server's name in the registry.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Records a bump this server made, before its message comes back, so that its
    /// writer need not wait for this server's own confirmation. Ahead of its turn: what
    /// the lease confirms stays at the bumps heard, since another server's bump numbered
    /// below this one may not have been heard yet.
    pub fn record_own_bump(&self, seq: u64, tags: &TagSet) {
        self.clock.record_ahead(seq, tags.iter());
    }

    fn revoke(&self) {
        self.valid_until.store(0, Ordering::Release);
    }
}

/// What the lease keeper needs of the Redis backend.
pub struct Context {
    pub link: RedisLink,
    pub metrics: Arc<Metrics>,
    pub keys: KeySpace,
    pub lease: Arc<NearLease>,
    pub scripts: Arc<Scripts>,
    #[cfg(feature = "test-hooks")]
    pub hooks: Arc<crate::test_hooks::TestHooks>,
}

/// Keeps the lease for as long as the server runs, starting over after every failure.
pub async fn keep(context: Context) {
    let mut backoff = MIN_BACKOFF;
    loop {
        let mut registered = false;
        let Err(error) = hold(&context, &mut registered).await;
        context.lease.revoke();
        tracing::debug!(%error, "near-cache lease lost; serving from Redis until it is renewed");
        if registered {
            // It was held: start over quickly, as after the first loss.
            backoff = MIN_BACKOFF;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Subscribes, registers and renews until something fails; returns what failed.
/// `registered` tells whether the lease was held at all.
async fn hold(
    context: &Context,
    registered: &mut bool,
) -> Result<std::convert::Infallible, String> {
    let lease = &context.lease;
    let subscribed = tokio::time::timeout(CALL_TIMEOUT, async {
        let (mut pubsub, master) = context.link.pubsub(&context.keys.near_registry()).await?;
        pubsub.subscribe(context.keys.bumps_channel()).await?;
        redis::RedisResult::Ok((pubsub, master))
    })
    .await;
    let (pubsub, master) = match subscribed {
        Ok(Ok(subscribed)) => subscribed,
        Ok(Err(e)) => return Err(format!("cannot subscribe: {e}")),
        Err(_) => return Err("cannot subscribe: timed out".to_owned()),
    };
    let (mut sink, mut messages) = pubsub.split();
    // Subscribed first, so that no bump falls between the copy and the messages.
    copy_clock(context).await?;
    let renew = &context.scripts.renew;
    let mut next_renewal = Instant::now();
    loop {
        tokio::select! {
            message = messages.next() => {
                let Some(message) = message else {
                    return Err("the subscription ended".to_owned());
                };
                let bump = message
                    .get_payload::<String>()
                    .ok()
                    .and_then(|payload| parse(&payload).map(|(seq, tags, news)| {
                        let news = news.filter(|news| news.is_a_write_elsewhere(lease));
                        (seq, tags, news.map(|news| news.what.to_owned()))
                    }));
                let Some((seq, tags, news_elsewhere)) = bump else {
                    return Err("a bump message does not parse".to_owned());
                };
                pause!(context.hooks, BeforeNearConfirm);
                if seq > lease.clock.recorded_through() + 1 {
                    // A bump this server did not hear came before it.
                    copy_clock(context).await?;
                }
                lease.clock.record(seq, tags);
                if let Some(what) = news_elsewhere {
                    context.metrics.record_invalidation(Cause {
                        what: &what,
                        origin: Origin::OtherProcess,
                    });
                }
                confirm(context, renew, master.as_ref(), registered, Behind::WaitForMessages).await?;
            }
            () = tokio::time::sleep_until(next_renewal) => {
                // The subscription must be alive too: a lease without it would confirm
                // bumps this server never heard.
                match tokio::time::timeout(CALL_TIMEOUT, sink.ping::<redis::Value>()).await {
                    Ok(Ok(_)) => {}
                    _ => return Err("the subscription does not answer".to_owned()),
                }
                confirm(context, renew, master.as_ref(), registered, Behind::CopyTheClock).await?;
                next_renewal = Instant::now() + RENEW_EVERY;
            }
        }
    }
}

/// Copies Redis's whole clock into the mirror (numbers only move up).
async fn copy_clock(context: &Context) -> Result<(), String> {
    let mut conn = context.link.conn();
    let mut invocation = context.scripts.snapshot.key(context.keys.clock(CLOCK_OF));
    let call = invocation
        .key(context.keys.master(CLOCK_OF))
        .key(context.keys.near_registry())
        .arg(initial_seq())
        .invoke_async::<Vec<(String, u64)>>(&mut conn);
    let fields = match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(fields)) => fields,
        Ok(Err(e)) => return Err(format!("cannot copy the clock: {e}")),
        Err(_) => return Err("cannot copy the clock: timed out".to_owned()),
    };
    let mut seq = 0;
    let mut bumped = Vec::with_capacity(fields.len());
    for (field, at) in fields {
        match field.parse::<u64>().ok().and_then(Tag::from_index) {
            Some(tag) => bumped.push((tag, at)),
            None if field == "seq" => seq = at,
            None => return Err(format!("the clock holds an unknown field {field:?}")),
        }
    }
    for (tag, at) in bumped {
        context.lease.clock.record(at, [tag]);
    }
    context.lease.clock.record(seq, []);
    Ok(())
}

/// What a renewal does when Redis's clock is ahead of the mirror.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Behind {
    /// Nothing: right after a message, the clock is ahead by bumps whose messages are
    /// on their way (each bump publishes its own), and the next ones confirm them. A
    /// copy of the whole clock (tens of thousands of fields) for each would hold up
    /// this server's confirmations, and so every writer, when writes come close.
    WaitForMessages,
    /// Copy it and confirm again at once: on a periodic renewal the clock is ahead by
    /// more than messages in flight can explain (a master that inherited the clock moves
    /// it without a message), and no writer should wait longer for this server.
    CopyTheClock,
}

/// Renews the lease, confirming every bump the mirror has recorded (see [`Behind`] for
/// when Redis's clock is ahead).
async fn confirm(
    context: &Context,
    renew: &Script,
    subscribed_to: Option<&RedisNode>,
    registered: &mut bool,
    behind: Behind,
) -> Result<(), String> {
    let lease = &context.lease;
    let sent_at = lease.now_ms();
    if let Some(subscribed_to) = subscribed_to {
        // During a Sentinel failover the old master may accept renewals the new one
        // never sees: renew only on the master the sentinels name, counting the lease
        // from before asking them.
        let named = tokio::time::timeout(CALL_TIMEOUT, context.link.named_master()).await;
        match named {
            Ok(Ok(Some(named))) if named == *subscribed_to => {}
            Ok(Ok(_)) => return Err("the sentinels name another master".to_owned()),
            Ok(Err(e)) => return Err(format!("cannot ask the sentinels: {e}")),
            Err(_) => return Err("cannot ask the sentinels: timed out".to_owned()),
        }
    }
    let held = lease.clock.recorded_through();
    let current = renew_once(context, renew, held, *registered).await?;
    if current > held && behind == Behind::CopyTheClock {
        copy_clock(context).await?;
        renew_once(context, renew, lease.clock.recorded_through(), true).await?;
    }
    *registered = true;
    let trusted_for = u64::try_from((LEASE - MARGIN).as_millis()).unwrap_or(0);
    lease
        .valid_until
        .store(sent_at + trusted_for, Ordering::Release);
    Ok(())
}

/// One run of [`RENEW`]: returns Redis's sequence.
async fn renew_once(
    context: &Context,
    renew: &Script,
    confirmed: u64,
    registered: bool,
) -> Result<u64, String> {
    let mut conn = context.link.conn();
    let mut invocation = renew.key(context.keys.near_registry());
    let call = invocation
        .key(context.keys.clock(CLOCK_OF))
        .key(context.keys.master(CLOCK_OF))
        .arg(&context.lease.id)
        .arg(u64::try_from(LEASE.as_millis()).unwrap_or(u64::MAX))
        .arg(confirmed)
        .arg(initial_seq())
        .arg(u8::from(registered))
        .invoke_async::<(u64, u8)>(&mut conn);
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok((_, 1))) => Err("the lease registry was lost".to_owned()),
        Ok(Ok((current, _))) => Ok(current),
        Ok(Err(e)) => Err(format!("cannot renew the lease: {e}")),
        Err(_) => Err("cannot renew the lease: timed out".to_owned()),
    }
}

/// What a bump tells the servers besides its tags: which process made it, and
/// why. `<process>:<origin>:<what>`.
pub struct News<'a> {
    process: &'a str,
    origin: Origin,
    what: &'a str,
}

impl NearLease {
    /// The news of a bump this process makes.
    pub fn news(&self, cause: Cause<'_>) -> String {
        format!("{}:{}:{}", self.id, cause.origin.name(), cause.what)
    }
}

impl News<'_> {
    /// A write through another process (each server records its own recoveries and
    /// the out-of-band changes it hears of).
    fn is_a_write_elsewhere(&self, lease: &NearLease) -> bool {
        self.process != lease.id && self.origin == Origin::ThisProcess
    }
}

/// `<number>:<tag>,<tag>,…:<news>`.
fn parse(payload: &str) -> Option<(u64, Vec<Tag>, Option<News<'_>>)> {
    let mut parts = payload.splitn(5, ':');
    let seq = parts.next()?.parse().ok()?;
    let tags = parts
        .next()?
        .split(',')
        .map(|tag| tag.parse().ok().and_then(Tag::from_index))
        .collect::<Option<Vec<Tag>>>()?;
    let news = match (parts.next(), parts.next(), parts.next()) {
        (Some(process), Some(origin), Some(what)) => Some(News {
            process,
            origin: Origin::from_name(origin)?,
            what,
        }),
        _ => None,
    };
    Some((seq, tags, news))
}
