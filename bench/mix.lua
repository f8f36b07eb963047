-- bench/mix's readers (wrk): MIX_SEARCHES distinct searches, made the same way in every
-- thread from MIX_SEED, drawn with a Zipf distribution (weight 1/k^MIX_ZIPF_S for the
-- k-th). Each thread talks to one of MIX_PORTS in turn and counts X-Cache hits and
-- misses and non-2xx answers; done() adds the threads' counts and prints one line.
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
local orderings = {"-created_at", "price", "-price"}

-- One search: 83 % in a location, half in a price range, one of the orderings, a
-- page from 1 to 10 of 20 listings.
local function search(locations, points)
  local query = {}
  if math.random() < 0.83 then
    query[#query + 1] = "location=" .. locations[math.random(#locations)]:gsub(" ", "%%20")
  end
  if math.random() < 0.5 then
    local a, b = math.random(#points), math.random(#points - 1)
    if b >= a then b = b + 1 end
    query[#query + 1] = string.format("min_price=%s.00&max_price=%s.00",
      points[math.min(a, b)], points[math.max(a, b)])
  end
  query[#query + 1] = "ordering=" .. orderings[math.random(#orderings)]
  query[#query + 1] = "page=" .. math.random(10) .. "&page_size=20"
  return "/properties/?" .. table.concat(query, "&")
end

function init()
  local count = tonumber(os.getenv("MIX_SEARCHES"))
  local s = tonumber(os.getenv("MIX_ZIPF_S"))
  local locations = split(os.getenv("MIX_LOCATIONS"))
  local points = split(os.getenv("MIX_PRICE_POINTS"))
  math.randomseed(tonumber(os.getenv("MIX_SEED")))
  local seen, tries = {}, 0
  while #searches < count do
    tries = tries + 1
    assert(tries < 100 * count, "fewer distinct searches than MIX_SEARCHES")
    local path = search(locations, points)
    if not seen[path] then
      seen[path] = true
      searches[#searches + 1] = wrk.format("GET", path)
    end
  end
  local total = 0
  for k = 1, count do
    total = total + 1 / k ^ s
    cdf[k] = total
  end
  for k = 1, count do cdf[k] = cdf[k] / total end
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
