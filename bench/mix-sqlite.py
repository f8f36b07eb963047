#!/usr/bin/env python3
"""bench/mix's SQLite ceiling for a miss: the statements of one cache miss (a page and
its count in one read transaction, as src/service/db/properties.rs runs them) on random searches
of bench/mix's mix, from a few threads for a few seconds. Python's sqlite3 lets other
threads run while SQLite works. SQLite's built-in lower() stands in for the server's
Unicode one (the seeded locations are ASCII). Prints "SQLITE tps=... avg_ms=...".
"""

import argparse
import random
import sqlite3
import threading
import time

ORDERINGS = ["created_at DESC, id DESC", "price ASC, id ASC", "price DESC, id DESC"]
COLUMNS = "id, title, description, price, location, created_at"


def where(rng, location, locations, points):
    """A search's WHERE clause and parameters, as in bench/mix.lua."""
    clauses, params = [], []
    if rng.random() < 0.83:
        clauses.append(f"{location} = ?")
        params.append(rng.choice(locations).lower())
    if rng.random() < 0.5:
        low, high = sorted(rng.sample(points, 2))
        clauses.append("price >= ? AND price <= ?")
        params += [low, high]
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def worker(args, deadline, results):
    rng = random.Random()
    conn = sqlite3.connect(args.database, isolation_level=None, check_same_thread=False)
    locations, points = args.locations.split(","), [float(p) for p in args.price_points.split(",")]
    location = args.location_column
    done, busy = 0, 0.0
    while time.monotonic() < deadline:
        filters, params = where(rng, location, locations, points)
        page = (f"SELECT {COLUMNS} FROM properties{filters}"
                f" ORDER BY {rng.choice(ORDERINGS)} LIMIT 20 OFFSET ?")
        began = time.monotonic()
        conn.execute("BEGIN")
        conn.execute(page, params + [20 * rng.randrange(10)]).fetchall()
        conn.execute(f"SELECT count(*) FROM properties{filters}", params).fetchone()
        conn.execute("COMMIT")
        busy += time.monotonic() - began
        done += 1
    results.append((done, busy))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--location-column", default="lower(location)", help="or location_key")
    parser.add_argument("--locations", required=True, help="comma-separated")
    parser.add_argument("--price-points", required=True, help="comma-separated")
    args = parser.parse_args()
    deadline, results = time.monotonic() + args.seconds, []
    threads = [threading.Thread(target=worker, args=(args, deadline, results)) for _ in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done = sum(d for d, _ in results)
    busy = sum(b for _, b in results)
    print(f"SQLITE tps={done / args.seconds:.0f} avg_ms={1000 * busy / max(done, 1):.2f}")


if __name__ == "__main__":
    main()
