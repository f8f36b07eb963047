#!/usr/bin/env python3
"""What hit ratio bench/mix's traffic would see under each way of retiring cached pages,
to choose an invalidation mechanism by its effect before building it. A model, not a
benchmark: reads arrive at a fixed rate (--reads, the write-free rate bench/mix
measured) and a miss refills its entry at once, so the ratios are upper bounds that rank
the mechanisms; bench/mix measures the one built.

The traffic is bench/mix's: --listings rows (20 locations; prices as `listings seed`
draws them), --searches distinct searches (83 % in one location, half in a price range
of two of the price points, one of three orderings, page 1 to 10 of 20), drawn with a
Zipf distribution; writes as bench/mix-writer.py makes them (40 % price changes, 30 %
location changes, 15 % creates, 15 % deletes). Mechanisms, each retiring a superset of
the pages a write can change (so each keeps the promise):

  global      every write retires every page (what listings does today)
  location    a write retires the pages of its row's old and new location, and every
              page without a location filter
  bands       as location, and only pages whose price range overlaps a price band
              (--bands, log-spaced) of the row's old or new price
  filter      a write retires a page only if its old or its new row matches the page's
              filter (the exact filter test; what bands approximates with counters)

    bench/mix-model.py --rates 0,1,10,50
"""
import argparse
import bisect
import heapq
import math
import random

LOCATIONS = 20
KINDS = [(20_000, 90_000), (60_000, 250_000), (150_000, 900_000),
         (400_000, 3_500_000), (120_000, 1_200_000), (30_000, 2_000_000)]
PRICE_POINTS = [20000, 50000, 100000, 200000, 300000, 500000, 750000, 1000000,
                1500000, 2000000, 3000000]
WRITES = [("price", 40), ("location", 30), ("create", 15), ("delete", 15)]
MECHANISMS = ["global", "location", "bands", "filter"]


def seeded_price(rng):
    low, high = rng.choice(KINDS)
    return rng.randint(low, high)


def searches(count, rng):
    """Distinct searches as (location or None, (min, max) or None): the filter is what
    invalidation looks at; ordering and page only make them distinct."""
    seen, out = set(), []
    while len(out) < count:
        location = rng.randrange(LOCATIONS) if rng.random() < 0.83 else None
        price = None
        if rng.random() < 0.5:
            a, b = rng.sample(range(len(PRICE_POINTS)), 2)
            price = (PRICE_POINTS[min(a, b)], PRICE_POINTS[max(a, b)])
        key = (location, price, rng.randrange(3), rng.randrange(1, 11))
        if key not in seen:
            seen.add(key)
            out.append(key)
    return out


class Bands:
    """--bands log-spaced price bands over the prices there are."""

    def __init__(self, count):
        low, high = math.log(20_000), math.log(3_500_001)
        self.edges = [math.exp(low + (high - low) * i / count) for i in range(1, count)]

    def of(self, price):
        return bisect.bisect(self.edges, price)

    def span(self, price_range):
        return range(self.of(price_range[0]), self.of(price_range[1]) + 1)


def retired(mechanism, search, rows, bands):
    """Whether a write whose old and new rows are `rows` ((location, price) or None)
    retires the page of `search` under `mechanism`."""
    location, price_range = search[0], search[1]
    if mechanism == "global":
        return True
    for row in rows:
        if row is None or (location is not None and row[0] != location):
            continue
        if price_range is None or mechanism == "location":
            return True
        if mechanism == "bands" and bands.of(row[1]) in bands.span(price_range):
            return True
        if mechanism == "filter" and price_range[0] <= row[1] <= price_range[1]:
            return True
    return False


def run(args, mechanism, rate):
    """One rate under one mechanism: (read requests/s, hit ratio) over the measured
    seconds. Closed loop, as wrk: --connections clients, each sending its next read when
    the last is answered. A hit takes connections / --reads seconds; a miss waits for
    one of --db-connections, each serving --miss-capacity / db-connections misses a
    second, and stores its page when done unless a write retired it meanwhile; reads
    of a page being loaded wait for that load (single flight) and are hits."""
    rng = random.Random(args.seed)
    table = {i: (rng.randrange(LOCATIONS), seeded_price(rng)) for i in range(args.listings)}
    next_id = args.listings
    pages = searches(args.searches, rng)
    cdf, total = [], 0.0
    for k in range(1, len(pages) + 1):
        total += 1 / k ** args.zipf
        cdf.append(total)
    bands = Bands(args.bands)
    valid = [False] * len(pages)
    generation = [0] * len(pages)
    loading = {}  # page -> when its load is done
    draws = random.Random(args.seed * 1000 + rate)
    hit_time = args.connections / args.reads
    miss_time = args.db_connections / args.miss_capacity
    db_free = [0.0] * args.db_connections
    start, end = args.warmup, args.warmup + args.duration
    writes = [start + (i + draws.random()) / rate for i in range(rate * args.duration)] if rate else []
    writes.append(math.inf)
    next_write = 0
    # (when a client's read is answered, page, load generation or None, hit)
    answers = [(draws.random() * hit_time, None, None, True) for _ in range(args.connections)]
    heapq.heapify(answers)
    hits = reads = 0
    while answers:
        now, page, loaded_at, hit = heapq.heappop(answers)
        while writes[next_write] <= now:
            rows, next_id = write(table, next_id, draws)
            for i, search in enumerate(pages):
                if valid[i] and retired(mechanism, search, rows, bands):
                    valid[i] = False
                    generation[i] += 1
            next_write += 1
        if page is not None and loaded_at is not None:
            loading.pop(page, None)
            if generation[page] == loaded_at:
                valid[page] = True
        if page is not None and start <= now < end:
            reads += 1
            hits += hit
        if now >= end:
            continue
        page = bisect.bisect_left(cdf, draws.random() * total)
        if valid[page]:
            heapq.heappush(answers, (now + hit_time, page, None, True))
        elif page in loading:
            heapq.heappush(answers, (loading[page] + hit_time, page, None, True))
        else:
            worker = min(range(len(db_free)), key=db_free.__getitem__)
            done = max(now, db_free[worker]) + miss_time
            db_free[worker] = done
            loading[page] = done
            heapq.heappush(answers, (done, page, generation[page], False))
    return reads / args.duration, hits / max(reads, 1)


def write(table, next_id, draws):
    """One write of bench/mix-writer.py's mix; returns its (old row, new row), None for
    the side a create or delete lacks, and the next id."""
    kind = draws.choices([k for k, _ in WRITES], [p for _, p in WRITES])[0]
    victim = draws.randrange(next_id)
    old = table.get(victim)
    if kind == "create" or old is None:
        new = (draws.randrange(LOCATIONS), draws.randint(20_000, 3_500_000))
        table[next_id] = new
        return (None, new), next_id + 1
    if kind == "delete":
        del table[victim]
        return (old, None), next_id
    if kind == "price":
        table[victim] = (old[0], draws.randint(20_000, 3_500_000))
    else:
        table[victim] = (draws.randrange(LOCATIONS), old[1])
    return (old, table[victim]), next_id


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listings", type=int, default=100_000)
    parser.add_argument("--searches", type=int, default=5000)
    parser.add_argument("--zipf", type=float, default=1.0)
    parser.add_argument("--reads", type=int, default=17_725,
                        help="read requests/s when every read hits (bench/mix at 0 writes/s)")
    parser.add_argument("--miss-capacity", type=float, default=350,
                        help="misses/s the database serves (bench/mix's pgbench ceiling)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--db-connections", type=int, default=10)
    parser.add_argument("--rates", default="0,1,10,50", help="writes per second")
    parser.add_argument("--bands", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=10, help="seconds without writes")
    parser.add_argument("--duration", type=int, default=20, help="seconds measured")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    print(f"model of bench/mix: {args.listings} listings, {args.searches} searches, "
          f"Zipf {args.zipf}, {args.connections} connections; a hit at {args.reads} "
          f"reads/s, misses at {args.miss_capacity:g}/s")
    print(f"{'':<10}" + "".join(f"{r:>8} w/s: req/s  hits" for r in rates))
    for mechanism in MECHANISMS:
        cells = [run(args, mechanism, rate) for rate in rates]
        print(f"{mechanism:<10}" + "".join(f"{rps:>19,.0f} {100 * h:>4.1f}%" for rps, h in cells))


if __name__ == "__main__":
    main()
