#!/usr/bin/env python3
"""bench/mix's view of where write acknowledgements go: p50 and p99 of each phase of a
write (listings_write_duration_seconds) between two dumps of the servers' /metrics
(every server's, one after another). A quantile is printed as the upper bound of its
bucket (bounds are 25-28 % apart), so it reads "at most". Prints nothing when the
servers do not have the metric."""

import re
import sys

SAMPLE = re.compile(r'listings_write_duration_seconds_bucket\{phase="(\w+)",le="([^"]+)"\} (\d+)')


def buckets(path):
    counts = {}
    with open(path) as f:
        for line in f:
            m = SAMPLE.match(line)
            if m:
                key = (m[1], float("inf") if m[2] == "+Inf" else float(m[2]))
                counts[key] = counts.get(key, 0) + int(m[3])
    return counts


def quantile(cumulative, q):
    total = cumulative[-1][1]
    for bound, count in cumulative:
        if count >= q * total:
            return "inf" if bound == float("inf") else f"{1000 * bound:g}"
    return "-"


before, after = buckets(sys.argv[1]), buckets(sys.argv[2])
parts = []
for phase in ("connection", "transaction", "invalidation"):
    cumulative = sorted((le, after[(p, le)] - before.get((p, le), 0)) for p, le in after if p == phase)
    if cumulative and cumulative[-1][1] > 0:
        parts.append(f"{phase} {quantile(cumulative, 0.5)} / {quantile(cumulative, 0.99)}")
if parts:
    print("write phases p50 / p99 ms (server side, bucket bounds: at most): " + ", ".join(parts))
