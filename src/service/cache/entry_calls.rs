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
use crate::service::cache::keys::EntryKey;

/// The entry's stored bytes and, with `fill_lock`, whether the caller now holds the
/// entry's fill lock for that long (taken only where there is no entry).
pub(super) async fn get_claiming(
    conn: &mut RedisConnection,
    claim: &Script,
    key: &EntryKey,
    fill_lock: Option<Duration>,
) -> RedisResult<(Option<Vec<u8>>, bool)> {
    let Some(lock_ttl) = fill_lock else {
        let stored = redis::cmd("GET")
            .arg(key.as_str())
            .query_async(conn)
            .await?;
        return Ok((stored, false));
    };
    let mut invocation = claim.key(key.as_str());
    invocation.key(key.fill_lock()).arg(millis(lock_ttl));
    let mut pipe = redis::pipe();
    pipe.atomic()
        .cmd("GET")
        .arg(key.as_str())
        .invoke_script(&invocation);
    let (stored, locked): (Option<Vec<u8>>, u8) = with_script(conn, &pipe, claim).await?;
    Ok((stored, locked == 1))
}

/// Stores `stamped` (a value opening with its stamp) in the entry for `ttl`, unless
/// the entry holds a value loaded later, and releases the fill lock; true if stored.
/// The value is staged in the fill lock's key, for at most `staged_ttl` should the
/// script fail (a Redis that lost its scripts, until they are loaded again).
pub(super) async fn store_staged(
    conn: &mut RedisConnection,
    promote: &Script,
    key: &EntryKey,
    stamped: Vec<u8>,
    ttl: Duration,
    staged_ttl: Duration,
) -> RedisResult<bool> {
    let lock = key.fill_lock();
    let mut invocation = promote.key(key.as_str());
    invocation.key(&lock).arg(millis(ttl));
    let mut pipe = redis::pipe();
    pipe.atomic()
        .cmd("SET")
        .arg(&lock)
        .arg(stamped)
        .arg("PX")
        .arg(millis(staged_ttl))
        .ignore()
        .invoke_script(&invocation);
    let (stored,): (u8,) = with_script(conn, &pipe, promote).await?;
    Ok(stored == 1)
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
