//! With Redis, a server may serve ready responses from its own memory only while it is
//! sure no acknowledged write has retired them, without asking Redis on every request.
//! It holds a lease for that:
//!
//! - it subscribes to the channel new generations are published on, then reads the
//!   current generation, then registers its lease (`lease:<id>` in the registry hash,
//!   with an expiry in Redis time) and renews it every third of [`LEASE`];
//! - each new generation it hears becomes its current one before it confirms it
//!   (`ack:<id>`), so once confirmed it never serves the older one;
//! - a writer's acknowledgement waits until every live lease has confirmed the new
//!   generation (see `RedisCache::bump`); a server that stops confirming (dead, frozen,
//!   cut off) stops being waited for when its lease expires, and by then it has stopped
//!   serving from memory itself: its own deadline ends earlier than Redis's;
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
use crate::service::cache::keys::{KeySpace, Resource};
use crate::service::cache::lua::{Scripts, initial_generation};
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

/// This server's lease and the generation it serves ready responses of.
pub struct NearLease {
    id: String,
    started: std::time::Instant,
    /// By resource: the newest generation this server has heard of.
    current: [AtomicU64; Resource::ALL.len()],
    /// Milliseconds after `started` until which serving from memory is allowed: set by
    /// a renewal over a live subscription, 0 once either is lost.
    valid_until: AtomicU64,
}

impl Default for NearLease {
    fn default() -> Self {
        NearLease {
            id: format!("{:016x}", rand::random::<u64>()),
            started: std::time::Instant::now(),
            current: std::array::from_fn(|_| AtomicU64::new(0)),
            valid_until: AtomicU64::new(0),
        }
    }
}

impl NearLease {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The generation of `resource` this server may serve from memory, if any.
    pub fn generation(&self, resource: Resource) -> Option<u64> {
        let live = self.now_ms() < self.valid_until.load(Ordering::Acquire);
        live.then(|| self.current[resource as usize].load(Ordering::Acquire))
    }

    fn learn(&self, resource: Resource, generation: u64) -> u64 {
        let slot = &self.current[resource as usize];
        slot.fetch_max(generation, Ordering::AcqRel).max(generation)
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
        let error = hold(&context, &mut registered).await;
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
async fn hold(context: &Context, registered: &mut bool) -> String {
    let lease = &context.lease;
    let subscribed = tokio::time::timeout(CALL_TIMEOUT, async {
        let (mut pubsub, master) = context.link.pubsub(&context.keys.near_registry()).await?;
        pubsub.subscribe(context.keys.generations_channel()).await?;
        redis::RedisResult::Ok((pubsub, master))
    })
    .await;
    let (pubsub, master) = match subscribed {
        Ok(Ok(subscribed)) => subscribed,
        Ok(Err(e)) => return format!("cannot subscribe: {e}"),
        Err(_) => return "cannot subscribe: timed out".to_owned(),
    };
    let (mut sink, mut messages) = pubsub.split();
    let renew = &context.scripts.renew;
    let mut next_renewal = Instant::now();
    loop {
        tokio::select! {
            message = messages.next() => {
                let Some(message) = message else {
                    return "the subscription ended".to_owned();
                };
                let Ok(payload) = message.get_payload::<String>() else {
                    continue;
                };
                if let Some((resource, generation, news)) = parse(&payload) {
                    pause!(context.hooks, BeforeNearConfirm);
                    lease.learn(resource, generation);
                    if let Some(news) = news.filter(|news| news.is_a_write_elsewhere(lease)) {
                        context.metrics.record_invalidation(Cause {
                            what: news.what,
                            origin: Origin::OtherProcess,
                        });
                    }
                    if let Err(e) = confirm(context, renew, master.as_ref(), registered).await {
                        return e;
                    }
                }
            }
            () = tokio::time::sleep_until(next_renewal) => {
                // The subscription must be alive too: a lease without it would confirm
                // generations this server never heard.
                match tokio::time::timeout(CALL_TIMEOUT, sink.ping::<redis::Value>()).await {
                    Ok(Ok(_)) => {}
                    _ => return "the subscription does not answer".to_owned(),
                }
                if let Err(e) = confirm(context, renew, master.as_ref(), registered).await {
                    return e;
                }
                next_renewal = Instant::now() + RENEW_EVERY;
            }
        }
    }
}

/// Renews the lease with the generations this server holds, then takes on the current
/// ones Redis answered with, confirming them at once if they are newer.
async fn confirm(
    context: &Context,
    renew: &Script,
    subscribed_to: Option<&RedisNode>,
    registered: &mut bool,
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
    for resource in Resource::ALL {
        let held = lease.current[resource as usize].load(Ordering::Acquire);
        let current = renew_once(context, renew, resource, held, *registered).await?;
        if lease.learn(resource, current) > held {
            // Redis is ahead (a message not yet read, or one lost): confirm it now, so
            // no writer waits a renewal period for this server.
            renew_once(context, renew, resource, current, true).await?;
        }
    }
    *registered = true;
    let trusted_for = u64::try_from((LEASE - MARGIN).as_millis()).unwrap_or(0);
    lease
        .valid_until
        .store(sent_at + trusted_for, Ordering::Release);
    Ok(())
}

/// One run of [`RENEW`]: returns the current generation of `resource`.
async fn renew_once(
    context: &Context,
    renew: &Script,
    resource: Resource,
    confirmed: u64,
    registered: bool,
) -> Result<u64, String> {
    let mut conn = context.link.conn();
    let mut invocation = renew.key(context.keys.near_registry());
    let call = invocation
        .key(context.keys.generation(resource))
        .key(context.keys.master(resource))
        .arg(&context.lease.id)
        .arg(u64::try_from(LEASE.as_millis()).unwrap_or(u64::MAX))
        .arg(confirmed)
        .arg(initial_generation())
        .arg(u8::from(registered))
        .invoke_async::<(u64, u8)>(&mut conn);
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok((_, 1))) => Err("the lease registry was lost".to_owned()),
        Ok(Ok((current, _))) => Ok(current),
        Ok(Err(e)) => Err(format!("cannot renew the lease: {e}")),
        Err(_) => Err("cannot renew the lease: timed out".to_owned()),
    }
}

/// What a bump tells the servers besides the generation: which process made it, and
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

/// `properties:1795667662534988:<news>`.
fn parse(payload: &str) -> Option<(Resource, u64, Option<News<'_>>)> {
    let mut parts = payload.splitn(5, ':');
    let name = parts.next()?;
    let resource = Resource::named(name)?;
    let generation = parts.next()?.parse().ok()?;
    let news = match (parts.next(), parts.next(), parts.next()) {
        (Some(process), Some(origin), Some(what)) => Some(News {
            process,
            origin: Origin::from_name(origin)?,
            what,
        }),
        _ => None,
    };
    Some((resource, generation, news))
}
