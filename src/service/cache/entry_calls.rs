//! The round trips that read and write one entry in Redis. An entry's value never
//! passes through Lua: a script that takes or returns a page of listings costs Redis
//! about 17 µs against half a microsecond for `GET` or `SET` (most of what Redis spent
//! on a miss). So the value travels in a plain command, followed by a small script
//! that does the rest (see `CLAIM` and `PROMOTE` in `lua`), both in one `MULTI`/`EXEC`:
//! nothing runs between them, so no one sees a value staged in a lock's key, and on a
//! cluster slot being migrated the `ASKING` that redirects them holds for both.

use std::time::Duration;

use redis::{ErrorKind, FromRedisValue, Pipeline, RedisResult, Script, ServerErrorKind};

use crate::redis_link::RedisConnection;
use crate::service::cache::backend::FillClaim;
use crate::service::cache::keys::EntryKey;
use crate::service::cache::lua::Scripts;

/// What a lookup's claim on the fill lock came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Claimed {
    /// The caller holds the lock now.
    Taken,
    /// A value stands (claimed without a retired value seen), or another caller holds
    /// the lock.
    NotTaken,
    /// A value loaded after the retired one the claim was made for stands: not taken.
    LaterValue,
}

/// The entry's stored bytes and, with `fill_lock`, what its claim on the entry's fill
/// lock came to: taken where there is no entry or, when the caller has seen a retired
/// value (`retired_seen`), where that value or an earlier one stands.
pub(super) async fn get_claiming(
    conn: &mut RedisConnection,
    scripts: &Scripts,
    key: &EntryKey,
    fill_lock: Option<FillClaim>,
) -> RedisResult<(Option<Vec<u8>>, Claimed)> {
    let Some(claim) = fill_lock else {
        let stored = redis::cmd("GET")
            .arg(key.as_str())
            .query_async(conn)
            .await?;
        return Ok((stored, Claimed::NotTaken));
    };
    let (script, mut invocation) = match claim.retired_seen {
        None => (&scripts.claim, scripts.claim.key(key.as_str())),
        Some(_) => (&scripts.lock, scripts.lock.key(key.as_str())),
    };
    invocation.key(key.fill_lock()).arg(millis(claim.ttl));
    if let Some(seq) = claim.retired_seen {
        invocation.arg(seq_digits(seq));
    }
    let mut pipe = redis::pipe();
    pipe.atomic()
        .cmd("GET")
        .arg(key.as_str())
        .invoke_script(&invocation);
    let (stored, answer): (Option<Vec<u8>>, u8) = with_script(conn, &pipe, script).await?;
    let claimed = match answer {
        1 => Claimed::Taken,
        2 => Claimed::LaterValue,
        _ => Claimed::NotTaken,
    };
    Ok((stored, claimed))
}

/// A stamp's sequence as a value opens with it (`LOCK` and `PROMOTE` compare them).
pub(super) fn seq_digits(seq: u64) -> String {
    format!("{seq:0width$}", width = SEQ_DIGITS)
}

/// Digits of the stamp's sequence that open a value.
pub(super) const SEQ_DIGITS: usize = 20;

/// One entry's value to store: opening with its stamp, kept for `ttl`.
pub(super) struct Staged<'a> {
    pub key: &'a EntryKey,
    pub stamped: Vec<u8>,
    pub ttl: Duration,
}

/// Stores each value in its entry, unless the entry holds a value loaded later, and
/// releases the entry's fill lock; whether each was stored. All in one transaction, so
/// the entries must share a node (any entry on a single Redis; one slot on a cluster).
/// Each value is staged in its fill lock's key, for at most `staged_ttl` should the
/// script fail (a Redis that lost its scripts, until they are loaded again).
pub(super) async fn store_staged(
    conn: &mut RedisConnection,
    promote: &Script,
    values: Vec<Staged<'_>>,
    staged_ttl: Duration,
) -> RedisResult<Vec<bool>> {
    let mut pipe = redis::pipe();
    pipe.atomic();
    for value in values {
        let lock = value.key.fill_lock();
        let mut invocation = promote.key(value.key.as_str());
        invocation.key(&lock).arg(millis(value.ttl));
        pipe.cmd("SET")
            .arg(&lock)
            .arg(value.stamped)
            .arg("PX")
            .arg(millis(staged_ttl))
            .ignore()
            .invoke_script(&invocation);
    }
    let stored: Vec<u8> = with_script(conn, &pipe, promote).await?;
    Ok(stored.into_iter().map(|answer| answer == 1).collect())
}

/// Runs `pipe`, which invokes `script`; where Redis does not have the script (a new or
/// restarted master), loads it and runs `pipe` again, as a lone invocation would (in a
/// transaction, the commands before the script have run: each pipeline here may run
/// twice).
async fn with_script<T: FromRedisValue>(
    conn: &mut RedisConnection,
    pipe: &Pipeline,
    script: &Script,
) -> RedisResult<T> {
    match pipe.query_async(conn).await {
        Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
            script.load_async(conn).await?;
            pipe.query_async(conn).await
        }
        answered => answered,
    }
}

pub(super) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
