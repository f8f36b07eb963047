#!/usr/bin/env python3
"""bench/mix's searches, one list for wrk, the misses-only phase and the database's
ceiling: COUNT distinct search paths drawn from SEED, most popular first (wrk draws them
with a Zipf distribution over this order). Each search is in one of LOCATIONS with
probability 0.83, in a price range of two of PRICE_POINTS with probability 0.5, ordered
by -created_at, price or -price, on page 1 to 10 of 20 listings.

    bench/mix-searches.py --count 5000 --seed 1 --locations Lamu,Thika --price-points 20000,50000
"""

import argparse
import random
import urllib.parse

ORDERINGS = ["-created_at", "price", "-price"]


def search(rng, locations, points):
    query = []
    if rng.random() < 0.83:
        query.append(("location", rng.choice(locations)))
    if rng.random() < 0.5:
        a, b = sorted(rng.sample(range(len(points)), 2))
        query += [("min_price", f"{points[a]}.00"), ("max_price", f"{points[b]}.00")]
    query += [("ordering", rng.choice(ORDERINGS)), ("page", str(rng.randint(1, 10))), ("page_size", "20")]
    return "/properties/?" + urllib.parse.urlencode(query, quote_via=urllib.parse.quote)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--locations", required=True, help="comma-separated")
    parser.add_argument("--price-points", required=True, help="comma-separated whole numbers")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    locations, points = args.locations.split(","), [int(p) for p in args.price_points.split(",")]
    seen, out = set(), []
    for _ in range(100 * args.count):
        path = search(rng, locations, points)
        if path not in seen:
            seen.add(path)
            out.append(path)
            if len(out) == args.count:
                break
    else:
        raise SystemExit(f"fewer than {args.count} distinct searches")
    print("\n".join(out))


if __name__ == "__main__":
    main()
