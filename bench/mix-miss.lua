-- bench/mix's misses-only phase (wrk): the price-ranged searches in MIX_SEARCH_FILE,
-- drawn uniformly, each with cents of its own in its lowest price (a search no request
-- made before, so a miss, in the same price band: the same statement as pgbench runs).
-- Prints one line with the misses (and any hit a repeated draw made).
local searches = {}

function init()
  for path in io.lines(os.getenv("MIX_SEARCH_FILE")) do
    if path:find("min_price=", 1, true) then searches[#searches + 1] = path end
  end
  math.randomseed(os.time() * 1000 + (tonumber(os.getenv("MIX_SEED")) or 1))
end

function request()
  local path = searches[math.random(#searches)]
  local cents = string.format(".%02d", math.random(1, 99))
  path = path:gsub("(min_price=%d+)%.00", "%1" .. cents)
  return wrk.format("GET", path)
end

hits, misses, failures = 0, 0, 0

function response(status, headers)
  if status < 200 or status > 299 then failures = failures + 1 end
  local cache = headers["x-cache"] or headers["X-Cache"]
  if cache == "HIT" then hits = hits + 1 elseif cache == "MISS" then misses = misses + 1 end
end

threads = {}
function setup(thread) threads[#threads + 1] = thread end

function done(summary, latency)
  local total = {hits = 0, misses = 0, failures = 0}
  for _, thread in ipairs(threads) do
    for name in pairs(total) do total[name] = total[name] + thread:get(name) end
  end
  io.write(string.format("MISSES requests=%d seconds=%.3f misses=%d hits=%d non2xx=%d p50_ms=%.3f\n",
    summary.requests, summary.duration / 1e6, total.misses, total.hits, total.failures,
    latency:percentile(50) / 1000))
end
