-- bench/mix's readers (wrk): the searches in MIX_SEARCH_FILE (one path a line, most
-- popular first; see bench/mix-searches.py), drawn with a Zipf distribution (weight
-- 1/k^MIX_ZIPF_S for the k-th). Each thread talks to one of MIX_PORTS in turn and
-- counts X-Cache hits and misses and non-2xx answers; done() adds the threads' counts
-- and prints one line.
local function split(text)
  local out = {}
  for word in (text or ""):gmatch("[^,]+") do out[#out + 1] = word end
  return out
end

local threads = {}
local ports = split(os.getenv("MIX_PORTS"))

function setup(thread)
  local n = #threads + 1
  threads[n] = thread
  thread:set("id", n)
  if #ports > 0 then
    thread.addr = wrk.lookup("127.0.0.1", ports[(n - 1) % #ports + 1])[1]
  end
end

local searches, cdf = {}, {}

function init()
  for path in io.lines(os.getenv("MIX_SEARCH_FILE")) do
    searches[#searches + 1] = wrk.format("GET", path)
  end
  local s = tonumber(os.getenv("MIX_ZIPF_S"))
  local total = 0
  for k = 1, #searches do
    total = total + 1 / k ^ s
    cdf[k] = total
  end
  for k = 1, #searches do cdf[k] = cdf[k] / total end
  math.randomseed(tonumber(os.getenv("MIX_SEED")) * 1000 + id)
end

-- The first search whose cumulative weight reaches a uniform draw.
function request()
  local u, lo, hi = math.random(), 1, #cdf
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if cdf[mid] < u then lo = mid + 1 else hi = mid end
  end
  return searches[lo]
end

hits, misses, failures = 0, 0, 0

function response(status, headers)
  if status < 200 or status > 299 then failures = failures + 1 end
  local cache = headers["x-cache"] or headers["X-Cache"]
  if cache == "HIT" then
    hits = hits + 1
  elseif cache == "MISS" then
    misses = misses + 1
  end
end

function done(summary, latency)
  local total = {hits = 0, misses = 0, failures = 0}
  for _, thread in ipairs(threads) do
    for name in pairs(total) do total[name] = total[name] + thread:get(name) end
  end
  local e = summary.errors
  io.write(string.format(
    "MIX requests=%d seconds=%.3f p50_ms=%.3f p99_ms=%.3f hits=%d misses=%d non2xx=%d timeouts=%d socket_errors=%d\n",
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, total.hits, total.misses, total.failures,
    e.timeout, e.connect + e.read + e.write))
end
