//! The Redis side of the cache protocol, written once: every script the backend and
//! the near-cache lease run, the shared `generation()` function, and the field names
//! of the near-cache registry (a hash of `lease:<server>` = expiry in Redis time, ms,
//! `ack:<server>` = the generation the server has confirmed, and `inherited_at`).
//! Each script touches keys of one hash slot only (see `keys`).

use redis::Script;

/// Lua, put before every script: the registry's field names, and
/// `generation(counter, master, registry, initial)`, which returns the current
/// generation of a resource.
/// - A replica refuses (a demoted master still answers reads): the caller asks for the
///   master again.
/// - A master that did not write the counter itself inherited it (a failover, a restart
///   from disk, a slot moved to it) and may lack the last bumps, whose writes were
///   acknowledged: it retires every generation first. So does a lost counter. The new
///   generation must be above any the old master handed out, which is the counter plus
///   the bumps it lost: it is the largest of the counter, the caller's clock and
///   Redis's (in microseconds), plus 2^32, far more bumps than any failover loses (and
///   an hour of clock error).
/// - Leases renewed on the old master after the last renewal this one received may
///   still be trusted by their servers: a master that inherited anything records when
///   (`inherited_at` in the registry), and writers wait a whole lease from then.
const PRELUDE: &str = r"
local LEASE_FIELD = 'lease:'
local ACK_FIELD = 'ack:'
local INHERITED_AT_FIELD = 'inherited_at'

local function generation(counter, master, registry, initial)
  if string.match(redis.call('INFO', 'replication'), 'role:(%a+)') ~= 'master' then
    error({err = 'READONLY a replica holds no generation: ask for the master'})
  end
  local me = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
  local g = redis.call('GET', counter)
  local stored = redis.call('GET', master)
  if g and stored == me then
    return tonumber(g)
  end
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  if g or stored or redis.call('EXISTS', registry) == 1 then
    redis.call('HSET', registry, INHERITED_AT_FIELD, string.format('%.0f', math.floor(now / 1000)))
  end
  local next = math.max(tonumber(g or '0'), tonumber(initial), now) + 4294967296
  -- Lua's own conversion would write a large generation as 1.79e+15.
  redis.call('SET', counter, string.format('%.0f', next))
  redis.call('SET', master, me)
  return next
end
";

/// KEYS: counter, master, registry. ARGV: initial generation.
const GENERATION: &str = r"
return generation(KEYS[1], KEYS[2], KEYS[3], ARGV[1])
";

/// KEYS: entry, its fill lock. ARGV: lock ms (0: ask for none). Returns {value or
/// nil, 1 if the caller now holds the fill lock}. A miss with the lock held by someone
/// else returns 0.
const FETCH: &str = r"
local v = redis.call('GET', KEYS[1])
if v then
  return {v, 0}
end
if ARGV[1] ~= '0' and redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[1]) then
  return {false, 1}
end
return {false, 0}
";

/// KEYS: entry, its fill lock. ARGV: value, ttl ms. Stores, and releases the lock.
const STORE: &str = r"
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('DEL', KEYS[2])
return 1
";

/// KEYS: counter, master, registry. ARGV: initial generation, channel, resource, news.
/// Publishes `resource:generation:news` to the servers (see `near_lease::News`).
const BUMP: &str = r"
generation(KEYS[1], KEYS[2], KEYS[3], ARGV[1])
local g = redis.call('INCR', KEYS[1])
redis.call('PUBLISH', ARGV[2], ARGV[3] .. ':' .. string.format('%.0f', g) .. ':' .. ARGV[4])
return g
";

/// KEYS: the registry. ARGV: a generation, lease ms. Forgets expired leases; returns
/// {how many live ones have not confirmed the generation yet, ms until no lease from
/// before the master inherited the registry can still be trusted}.
const PENDING_ACKS: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local fields = redis.call('HGETALL', KEYS[1])
local registry = {}
for i = 1, #fields, 2 do
  registry[fields[i]] = fields[i + 1]
end
local wanted = tonumber(ARGV[1])
local pending = 0
local inherited_at = tonumber(registry[INHERITED_AT_FIELD] or '0')
local inherited_wait = math.max(0, inherited_at + tonumber(ARGV[2]) - now)
for i = 1, #fields, 2 do
  local field = fields[i]
  if string.sub(field, 1, #LEASE_FIELD) == LEASE_FIELD then
    local server = string.sub(field, #LEASE_FIELD + 1)
    if tonumber(fields[i + 1]) < now then
      redis.call('HDEL', KEYS[1], field, ACK_FIELD .. server)
    else
      -- A live lease's ack is never among what this loop deletes.
      local acked = tonumber(registry[ACK_FIELD .. server] or '0')
      if acked < wanted then pending = pending + 1 end
    end
  end
end
return {pending, inherited_wait}
";

/// KEYS: the registry, the counter, the master (one hash slot). ARGV: server id, lease
/// ms, the generation the server has confirmed, initial generation, 1 if the lease is
/// registered already. Renews the lease, records the confirmed generation (never
/// lowering it), and returns {current generation, 1 if the registration was missing
/// (the registry was lost or the lease ran out: it must start over)}.
const RENEW: &str = r"
local g = generation(KEYS[2], KEYS[3], KEYS[1], ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lost = 0
if ARGV[5] == '1' and redis.call('HEXISTS', KEYS[1], LEASE_FIELD .. ARGV[1]) == 0 then
  lost = 1
end
local acked = tonumber(redis.call('HGET', KEYS[1], ACK_FIELD .. ARGV[1]) or '0')
if tonumber(ARGV[3]) > acked then acked = tonumber(ARGV[3]) end
redis.call('HSET', KEYS[1], LEASE_FIELD .. ARGV[1], now + tonumber(ARGV[2]), ACK_FIELD .. ARGV[1], string.format('%.0f', acked))
return {string.format('%.0f', g), lost}
";

/// The scripts, loaded once per backend.
pub struct Scripts {
    pub generation: Script,
    pub fetch: Script,
    pub store: Script,
    pub bump: Script,
    pub pending_acks: Script,
    pub renew: Script,
}

impl Default for Scripts {
    fn default() -> Self {
        let script = |body: &str| Script::new(&format!("{PRELUDE}{body}"));
        Scripts {
            generation: script(GENERATION),
            fetch: script(FETCH),
            store: script(STORE),
            bump: script(BUMP),
            pending_acks: script(PENDING_ACKS),
            renew: script(RENEW),
        }
    }
}

/// Microseconds since the epoch: above every generation a lost counter could have had.
pub fn initial_generation() -> u64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since_epoch.as_micros()).unwrap_or(u64::MAX / 2)
}
