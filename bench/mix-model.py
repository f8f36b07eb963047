#!/usr/bin/env python3
"""What hit ratio bench/mix's traffic would see under each way of retiring cached pages,
to choose an invalidation mechanism by its effect before building it. A model, not a
benchmark: a hit costs what the write-free rate bench/mix measured (--reads) allows, a
miss what the database's ceiling (--miss-capacity) allows, and nothing else is slow, so
the ratios are upper bounds that rank the mechanisms; bench/mix measures the one built.

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
              (--bands, log-spaced over 1,000 to 100,000,000) of the row's old or new
              price
  filter      a write retires a page only if its old or its new row matches the page's
              filter (the exact filter test; what bands approximates with counters)
  tags        (what is being built) a write retires a page if it can change which rows
              match the page's filter, its count (counters per location and band:
              creates and deletes as under bands, a location change only pages of its
              old or new location, a price change only pages with a price range); if it
              writes a row that was on the page when the page was loaded; or, on a page
              ordered by price, if it is a price change (in the page's location, if it
              has one) whose bands from the old price to the new meet those from the
              page's lowest price to its highest when it was loaded

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
MECHANISMS = ["global", "location", "bands", "filter", "tags"]
ORDERINGS = ["-created_at", "price", "-price"]
PAGE_SIZE = 20
ANYWHERE = LOCATIONS  # the index of the lists over every location


def seeded_price(rng):
    low, high = rng.choice(KINDS)
    return rng.randint(low, high)


def searches(count, rng):
    """Distinct searches as (location or None, (min, max) or None, ordering (an index
    into ORDERINGS), page from 1): the filter is what most mechanisms look at; tags also
    looks at the rows the ordering and page put on the page."""
    seen, out = set(), []
    while len(out) < count:
        location = rng.randrange(LOCATIONS) if rng.random() < 0.83 else None
        price = None
        if rng.random() < 0.5:
            a, b = rng.sample(range(len(PRICE_POINTS)), 2)
            price = (PRICE_POINTS[min(a, b)], PRICE_POINTS[max(a, b)])
        key = (location, price, rng.randrange(len(ORDERINGS)), rng.randrange(1, 11))
        if key not in seen:
            seen.add(key)
            out.append(key)
    return out


class Bands:
    """--bands log-spaced price bands over [1,000, 100,000,000) (a price outside is in
    the first or the last)."""

    def __init__(self, count):
        low, high = math.log(1_000), math.log(100_000_000)
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


class Listings:
    """The rows (id -> (location, price)) and the orders pages are read in, kept by
    every write: per location and over all (index ANYWHERE), (price, id) in order and
    ids in order (created_at's order: a create has the highest id)."""

    def __init__(self, rows):
        self.rows = rows
        self.by_price = [[] for _ in range(LOCATIONS + 1)]
        self.by_id = [[] for _ in range(LOCATIONS + 1)]
        for i, (location, price) in rows.items():
            for key in (location, ANYWHERE):
                self.by_price[key].append((price, i))
                self.by_id[key].append(i)
        for lists in (self.by_price, self.by_id):
            for entries in lists:
                entries.sort()

    def get(self, i):
        return self.rows.get(i)

    def put(self, i, row):
        if i in self.rows:
            self.delete(i)
        self.rows[i] = row
        for key in (row[0], ANYWHERE):
            bisect.insort(self.by_price[key], (row[1], i))
            bisect.insort(self.by_id[key], i)

    def delete(self, i):
        location, price = self.rows.pop(i)
        for key in (location, ANYWHERE):
            for entries, entry in ((self.by_price[key], (price, i)), (self.by_id[key], i)):
                del entries[bisect.bisect_left(entries, entry)]

    def page(self, search):
        """The ids on the page of `search` now, with its lowest and highest price
        (None for an empty page)."""
        location, price_range, ordering, number = search
        key = ANYWHERE if location is None else location
        offset = PAGE_SIZE * (number - 1)
        if ORDERINGS[ordering] == "-created_at":
            ids = self.by_id[key]
            if price_range is None:
                end = max(len(ids) - offset, 0)
                window = ids[max(end - PAGE_SIZE, 0):end]
            else:
                (low, high), rows, window = price_range, self.rows, []
                for i in reversed(ids):
                    if low <= rows[i][1] <= high:
                        if offset:
                            offset -= 1
                        else:
                            window.append(i)
                            if len(window) == PAGE_SIZE:
                                break
            prices = [self.rows[i][1] for i in window]
        else:
            entries = self.by_price[key]
            first, end = 0, len(entries)
            if price_range is not None:
                first = bisect.bisect_left(entries, (price_range[0], -1))
                end = bisect.bisect_right(entries, (price_range[1], math.inf))
            if ORDERINGS[ordering] == "price":
                rows = entries[first + offset:min(first + offset + PAGE_SIZE, end)]
            else:
                rows = entries[max(end - offset - PAGE_SIZE, first):max(end - offset, first)]
            window, prices = [i for _, i in rows], [p for p, _ in rows]
        if not window:
            return frozenset(), None
        return frozenset(window), (min(prices), max(prices))


class Tags:
    """The tags mechanism: per page, its filter's band span, and the ids and price bands
    of the rows it was last loaded with (`load`, when its miss starts)."""

    def __init__(self, pages, bands):
        self.pages, self.bands = pages, bands
        self.spans = [None if r is None else (bands.of(r[0]), bands.of(r[1]))
                      for _, r, _, _ in pages]
        self.anywhere = [i for i, search in enumerate(pages) if search[0] is None]
        self.in_location = [[i for i, search in enumerate(pages) if search[0] == location]
                            for location in range(LOCATIONS)]
        self.ids = [frozenset()] * len(pages)
        self.price_bands = [None] * len(pages)  # (band of the lowest, of the highest)
        self.holders = {}  # id -> the pages it was on when they were loaded

    def load(self, page, listings):
        for i in self.ids[page]:
            self.holders[i].discard(page)
        ids, prices = listings.page(self.pages[page])
        for i in ids:
            self.holders.setdefault(i, set()).add(page)
        self.ids[page] = ids
        self.price_bands[page] = None if prices is None else tuple(map(self.bands.of, prices))

    def retired(self, kind, rows, victim):
        """The pages a write (kind, (old row, new row), id) retires: membership, items,
        order."""
        old, new = rows
        out = set(self.holders.get(victim, ())) if old is not None else set()
        row = old or new
        if kind == "location":
            candidates = self.in_location[old[0]] + self.in_location[new[0]]
        else:
            candidates = self.anywhere + self.in_location[row[0]]
        of = self.bands.of
        if kind == "price":
            low, high = sorted((of(old[1]), of(new[1])))
        for i in candidates:
            location, span = self.pages[i][0], self.spans[i]
            if kind == "create" or kind == "delete":
                if span is None or span[0] <= of(row[1]) <= span[1]:
                    out.add(i)
            elif kind == "location":
                for side in rows:
                    if side[0] == location and (span is None or span[0] <= of(side[1]) <= span[1]):
                        out.add(i)
            else:
                if span is not None and (span[0] <= low <= span[1] or span[0] <= high <= span[1]):
                    out.add(i)
                elif (ORDERINGS[self.pages[i][2]] != "-created_at" and self.price_bands[i]
                      and low <= self.price_bands[i][1] and high >= self.price_bands[i][0]):
                    out.add(i)
        return out


def run(args, mechanism, rate):
    """One rate under one mechanism: (read requests/s, hit ratio) over the measured
    seconds. Closed loop, as wrk: --connections clients, each sending its next read when
    the last is answered. A hit takes connections / --reads seconds; a miss waits for
    one of --db-connections, each serving --miss-capacity / db-connections misses a
    second, and stores its page when done unless a write retired it meanwhile (from
    when the miss was sent: under tags, the rows it depends on are those of that
    moment); reads of a page being loaded wait for that load (single flight) and are
    hits."""
    rng = random.Random(args.seed)
    table = Listings({i: (rng.randrange(LOCATIONS), seeded_price(rng)) for i in range(args.listings)})
    next_id = args.listings
    pages = searches(args.searches, rng)
    cdf, total = [], 0.0
    for k in range(1, len(pages) + 1):
        total += 1 / k ** args.zipf
        cdf.append(total)
    bands = Bands(args.bands)
    tags = Tags(pages, bands) if mechanism == "tags" else None
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
            kind, rows, victim, next_id = write(table, next_id, draws)
            if tags:
                hit_pages = tags.retired(kind, rows, victim)
            else:
                hit_pages = (i for i, search in enumerate(pages)
                             if (valid[i] or i in loading) and retired(mechanism, search, rows, bands))
            for i in hit_pages:
                if valid[i] or i in loading:
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
            if tags:
                tags.load(page, table)
            heapq.heappush(answers, (done, page, generation[page], False))
    return reads / args.duration, hits / max(reads, 1)


def write(table, next_id, draws):
    """One write of bench/mix-writer.py's mix; returns its kind, its (old row, new row),
    None for the side a create or delete lacks, the id it wrote, and the next id."""
    kind = draws.choices([k for k, _ in WRITES], [p for _, p in WRITES])[0]
    victim = draws.randrange(next_id)
    old = table.get(victim)
    if kind == "create" or old is None:
        new = (draws.randrange(LOCATIONS), draws.randint(20_000, 3_500_000))
        table.put(next_id, new)
        return "create", (None, new), next_id, next_id + 1
    if kind == "delete":
        table.delete(victim)
        return kind, (old, None), victim, next_id
    if kind == "price":
        new = (old[0], draws.randint(20_000, 3_500_000))
    else:
        new = (draws.randrange(LOCATIONS), old[1])
    table.put(victim, new)
    return kind, (old, new), victim, next_id


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listings", type=int, default=100_000)
    parser.add_argument("--searches", type=int, default=5000)
    parser.add_argument("--zipf", type=float, default=1.0)
    parser.add_argument("--reads", type=int, default=75_000,
                        help="read requests/s when every read hits (bench/mix at 0 writes/s, "
                             "PostgreSQL + Redis)")
    parser.add_argument("--miss-capacity", type=float, default=758,
                        help="misses/s the database serves (bench/mix's pgbench ceiling)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--db-connections", type=int, default=10)
    parser.add_argument("--rates", default="0,1,10,50", help="writes per second")
    parser.add_argument("--bands", type=int, default=64,
                        help="price bands of bands and tags, log-spaced over 1,000 to 100,000,000")
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
