#!/usr/bin/env python3
"""bench/mix's SQLite ceiling for a miss: the statements of cache misses (one each, as
`listings list-properties --sql` prints them), drawn at random from --statements, run
from a few threads for a few seconds. Python's sqlite3 lets other threads run while
SQLite works. Prints "SQLITE tps=... avg_ms=...".
"""

import argparse
import random
import sqlite3
import threading
import time


def worker(args, statements, deadline, results):
    rng = random.Random()
    conn = sqlite3.connect(args.database, isolation_level=None, check_same_thread=False)
    done, busy = 0, 0.0
    while time.monotonic() < deadline:
        statement = rng.choice(statements)
        began = time.monotonic()
        conn.execute(statement).fetchall()
        busy += time.monotonic() - began
        done += 1
    results.append((done, busy))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", required=True)
    parser.add_argument("--statements", required=True, help="a file, one statement a line")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    with open(args.statements) as f:
        statements = [line.strip().rstrip(";") for line in f if line.strip()]
    deadline, results = time.monotonic() + args.seconds, []
    threads = [threading.Thread(target=worker, args=(args, statements, deadline, results))
               for _ in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done = sum(d for d, _ in results)
    busy = sum(b for _, b in results)
    print(f"SQLITE tps={done / args.seconds:.0f} avg_ms={1000 * busy / max(done, 1):.2f}")


if __name__ == "__main__":
    main()
