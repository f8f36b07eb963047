//! The Redis side of the cache protocol, written once: every script the backend and
//! the near-cache lease run, the shared `current_seq()` function, and the field names
//! of the near-cache registry (a hash of `lease:<server>` = expiry in Redis time, ms,
//! `ack:<server>` = the bump the server has confirmed, and `inherited_at`), which also
//! holds the replicas' watermark (`wal` and `wal_seq`: see `BUMP`).
//! Each script touches keys of one hash slot only (see `keys`).
//!
//! The clock is a hash: `seq`, the latest bump's number, and one field per bumped tag
//! (its index) holding the number of its latest bump (see `clock`). Numbers are written
//! with `%.0f`: Lua's own conversion would write a large one as 1.79e+15.

use redis::Script;

/// Lua, put before every script: the registry's field names, and
/// `current_seq(clock, master, registry, initial)`, which returns the clock's sequence.
/// - A replica refuses (a demoted master still answers reads): the caller asks for the
///   master again.
/// - A master that did not write the clock itself inherited it (a failover, a restart
///   from disk, a slot moved to it) and may lack the last bumps, whose writes were
///   acknowledged: it retires everything first (tag 0). So does a lost clock. The new
///   number must be above any the old master handed out, which is the sequence plus the
///   bumps it lost: it is the largest of the sequence, the caller's clock and Redis's
///   (in microseconds), plus 2^32, far more bumps than any failover loses (and an hour
///   of clock error).
/// - Leases renewed on the old master after the last renewal this one received may
///   still be trusted by their servers: a master that inherited anything records when
///   (`inherited_at` in the registry), and writers wait a whole lease from then.
const PRELUDE: &str = r"
local LEASE_FIELD = 'lease:'
local ACK_FIELD = 'ack:'
local INHERITED_AT_FIELD = 'inherited_at'
local SEQ_FIELD = 'seq'
local ALL_TAG = '0'
local WAL_FIELD = 'wal'
local WAL_SEQ_FIELD = 'wal_seq'

local function number(n)
  return string.format('%.0f', n)
end

local function current_seq(clock, master, registry, initial)
  if string.match(redis.call('INFO', 'replication'), 'role:(%a+)') ~= 'master' then
    error({err = 'READONLY a replica holds no clock: ask for the master'})
  end
  local me = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
  local s = redis.call('HGET', clock, SEQ_FIELD)
  local stored = redis.call('GET', master)
  if s and stored == me then
    return tonumber(s)
  end
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  if s or stored or redis.call('EXISTS', registry) == 1 then
    redis.call('HSET', registry, INHERITED_AT_FIELD, number(math.floor(now / 1000)))
  end
  local next = math.max(tonumber(s or '0'), tonumber(initial), now) + 4294967296
  redis.call('HSET', clock, SEQ_FIELD, number(next), ALL_TAG, number(next))
  redis.call('SET', master, me)
  return next
end

-- {live leases other than `except` that have not confirmed bump `wanted`, the ms
-- writers must still wait after a master inherited the registry}. Forgets leases that
-- ran out.
local function pending_acks(registry, wanted, lease_ms, except)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local fields = redis.call('HGETALL', registry)
  local by_field = {}
  for i = 1, #fields, 2 do
    by_field[fields[i]] = fields[i + 1]
  end
  wanted = tonumber(wanted)
  local pending = 0
  local inherited_at = tonumber(by_field[INHERITED_AT_FIELD] or '0')
  local inherited_wait = math.max(0, inherited_at + tonumber(lease_ms) - now)
  for i = 1, #fields, 2 do
    local field = fields[i]
    if string.sub(field, 1, #LEASE_FIELD) == LEASE_FIELD then
      local server = string.sub(field, #LEASE_FIELD + 1)
      if tonumber(fields[i + 1]) < now then
        redis.call('HDEL', registry, field, ACK_FIELD .. server)
      elseif server ~= except then
        -- A live lease's ack is never among what this loop deletes.
        local acked = tonumber(by_field[ACK_FIELD .. server] or '0')
        if acked < wanted then pending = pending + 1 end
      end
    end
  end
  return {pending, inherited_wait}
end
";

/// KEYS: clock, master, registry. ARGV: initial sequence, then tags. Returns {the
/// sequence, then each tag's latest bump (false if never bumped)}.
const CHECK: &str = r"
local s = current_seq(KEYS[1], KEYS[2], KEYS[3], ARGV[1])
local bumped = redis.call('HMGET', KEYS[1], ALL_TAG, unpack(ARGV, 2))
table.insert(bumped, 1, number(s))
return bumped
";

/// KEYS: clock, master, registry. ARGV: initial sequence. Returns the whole clock.
const SNAPSHOT: &str = r"
current_seq(KEYS[1], KEYS[2], KEYS[3], ARGV[1])
return redis.call('HGETALL', KEYS[1])
";

/// KEYS: entry, its fill lock. ARGV: lock ms. Runs right after a plain `GET` of the
/// entry, in one transaction: 1 if there is no entry and the caller now holds the fill
/// lock; 0 otherwise. The value itself never passes through Lua, where a page of
/// listings costs Redis thirty times what `GET` does.
const CLAIM: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 and redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[1]) then
  return 1
end
return 0
";

/// KEYS: entry, its fill lock. ARGV: lock ms, the sequence of the retired value the
/// caller found there (20 digits; empty for a value it could not read). 1 if the
/// caller now holds the lock; 0 if someone else does; 2 if a value loaded later has
/// been stored meanwhile (look it up again).
const LOCK: &str = r"
local v = redis.call('GETRANGE', KEYS[1], 0, 19)
if v ~= '' and ARGV[2] ~= '' and v > ARGV[2] then
  return 2
end
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[1]) then
  return 1
end
return 0
";

/// KEYS: entry, its fill lock. ARGV: ttl ms. Runs right after a plain `SET` of the
/// value (opening with its stamp's sequence, 20 digits) into the fill lock's key, in
/// one transaction, so that the value never passes through Lua: moves it into the
/// entry unless the entry holds a value loaded later, which releases the lock either
/// way. 1 if stored. (A lock key without a value cannot be met here; if it were, it
/// would be a lock, and stay.)
const PROMOTE: &str = r"
local head = redis.call('GETRANGE', KEYS[2], 0, 19)
if #head < 20 then
  return 0
end
local old = tonumber(redis.call('GETRANGE', KEYS[1], 0, 19))
if old and old > tonumber(head) then
  redis.call('DEL', KEYS[2])
  return 0
end
redis.call('RENAME', KEYS[2], KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
";

/// KEYS: clock, master, registry. ARGV: initial sequence, channel, news, the write's
/// WAL position (16 hex digits, empty when not known), the writer's server id, lease
/// ms, then tags. Bumps the tags under the next number and publishes
/// `number:tags:news` to the servers (see `near_lease`); returns {the number, then what
/// `PENDING_ACKS` returns for it}, so that a writer nobody else makes wait is done in
/// one round trip.
///
/// The watermark replicas are held to (`wal`) is raised to the position, never
/// lowered. It is known only while `wal_seq` equals the sequence: every bump up to
/// `wal_seq` raised it (or a `HEAL` covered them). A bump without a position (an
/// out-of-band change, a retire-everything, a writer that reads no positions, or an
/// older `listings` whose script knows nothing of it) leaves `wal_seq` behind, and so
/// does a master that inherited the clock (its sequence jumps): unknown, until `HEAL`.
const BUMP: &str = r"
current_seq(KEYS[1], KEYS[2], KEYS[3], ARGV[1])
local s = redis.call('HINCRBY', KEYS[1], SEQ_FIELD, 1)
if ARGV[4] ~= '' then
  local wal = redis.call('HGET', KEYS[3], WAL_FIELD)
  if not wal or wal < ARGV[4] then redis.call('HSET', KEYS[3], WAL_FIELD, ARGV[4]) end
  if tonumber(redis.call('HGET', KEYS[3], WAL_SEQ_FIELD) or '0') == s - 1 then
    redis.call('HSET', KEYS[3], WAL_SEQ_FIELD, number(s))
  end
end
s = number(s)
local fields, tags = {}, {}
for i = 7, #ARGV do
  tags[#tags + 1] = ARGV[i]
  fields[#fields + 1] = ARGV[i]
  fields[#fields + 1] = s
end
-- unpack() is bounded by Lua's stack: a large import's tags go in parts.
for i = 1, #fields, 4000 do
  redis.call('HSET', KEYS[1], unpack(fields, i, math.min(i + 3999, #fields)))
end
redis.call('PUBLISH', ARGV[2], s .. ':' .. table.concat(tags, ',') .. ':' .. ARGV[3])
local pending = pending_acks(KEYS[3], s, ARGV[6], ARGV[5])
return {s, pending[1], pending[2]}
";

/// KEYS: clock, master, registry. ARGV: initial sequence. Returns {the watermark,
/// `wal_seq` (each false when absent), the sequence}.
const WATERMARK: &str = r"
local s = current_seq(KEYS[1], KEYS[2], KEYS[3], ARGV[1])
local wal = redis.call('HMGET', KEYS[3], WAL_FIELD, WAL_SEQ_FIELD)
return {wal[1], wal[2], number(s)}
";

/// KEYS: clock, master, registry. ARGV: initial sequence, the sequence the caller read
/// with the watermark, a WAL position the primary reported after that read. Makes the
/// watermark known again, raised to that position, unless a bump came since the
/// caller's read (each bump up to it was made after its write's commit, so before the
/// position was read). 1 if it did.
const HEAL: &str = r"
local s = current_seq(KEYS[1], KEYS[2], KEYS[3], ARGV[1])
if number(s) ~= ARGV[2] then
  return 0
end
local wal = redis.call('HGET', KEYS[3], WAL_FIELD)
if not wal or wal < ARGV[3] then redis.call('HSET', KEYS[3], WAL_FIELD, ARGV[3]) end
redis.call('HSET', KEYS[3], WAL_SEQ_FIELD, number(s))
return 1
";

/// KEYS: the registry. ARGV: a bump's number, lease ms, the writer's own server id.
/// Forgets expired leases; returns {how many live ones but the writer's have not
/// confirmed the bump yet, ms until no lease from before the master inherited the
/// registry can still be trusted}.
const PENDING_ACKS: &str = r"
return pending_acks(KEYS[1], ARGV[1], ARGV[2], ARGV[3])
";

/// KEYS: the registry, the clock, the master (one hash slot). ARGV: server id, lease
/// ms, the bump the server has confirmed, initial sequence, 1 if the lease is
/// registered already. Renews the lease, records the confirmed bump (never lowering
/// it), and returns {the current sequence, 1 if the registration was missing (the
/// registry was lost or the lease ran out: it must start over)}.
const RENEW: &str = r"
local s = current_seq(KEYS[2], KEYS[3], KEYS[1], ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lost = 0
if ARGV[5] == '1' and redis.call('HEXISTS', KEYS[1], LEASE_FIELD .. ARGV[1]) == 0 then
  lost = 1
end
local acked = tonumber(redis.call('HGET', KEYS[1], ACK_FIELD .. ARGV[1]) or '0')
if tonumber(ARGV[3]) > acked then acked = tonumber(ARGV[3]) end
redis.call('HSET', KEYS[1], LEASE_FIELD .. ARGV[1], now + tonumber(ARGV[2]), ACK_FIELD .. ARGV[1], number(acked))
return {number(s), lost}
";

/// The scripts, loaded once per backend.
pub struct Scripts {
    pub check: Script,
    pub snapshot: Script,
    pub claim: Script,
    pub lock: Script,
    pub promote: Script,
    pub bump: Script,
    pub watermark: Script,
    pub heal: Script,
    pub pending_acks: Script,
    pub renew: Script,
}

impl Default for Scripts {
    fn default() -> Self {
        let script = |body: &str| Script::new(&format!("{PRELUDE}{body}"));
        Scripts {
            check: script(CHECK),
            snapshot: script(SNAPSHOT),
            claim: script(CLAIM),
            lock: script(LOCK),
            promote: script(PROMOTE),
            bump: script(BUMP),
            watermark: script(WATERMARK),
            heal: script(HEAL),
            pending_acks: script(PENDING_ACKS),
            renew: script(RENEW),
        }
    }
}

/// Microseconds since the epoch: above every number a lost clock could have handed out.
pub fn initial_seq() -> u64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since_epoch.as_micros()).unwrap_or(u64::MAX / 2)
}
