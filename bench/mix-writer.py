#!/usr/bin/env python3
"""bench/mix's writer: changes listings through the write API at a steady rate.

Write i is due at start + i/rate (an absolute schedule, so late writes do not shift the
ones after them); threads with a keep-alive connection each take the next due write,
so up to --connections writes are in flight and slow acknowledgements do not slow the
writes down until that many are waiting. The mix: 40 % price
changes, 30 % location changes, 15 % creates, 15 % deletes, on ids from --ids (the live
ids, one a line; rewritten at the end with the creates and without the deletes). No two
writes in flight touch the same id; a failed request counts as an error (the thread
reconnects for its next one). Writes still unsent at the end of the window are not sent
but counted as missed, so that every write measured ran beside the reads. Measured are
the writes acknowledged after --warmup, whenever sent. The last line printed is
"WRITER key=value ...", for bench/mix; --log keeps every write's times.
"""

import argparse
import http.client
import json
import os
import random
import threading
import time

MIX = [("price", 40), ("location", 30), ("create", 15), ("delete", 15)]
EXPECTED = {"price": 200, "location": 200, "create": 201, "delete": 204}


def percentile(sorted_values, q):
    if not sorted_values:
        return float("nan")
    return sorted_values[max(0, -(-len(sorted_values) * q // 100) - 1)]


class Writer:
    def __init__(self, args):
        self.args = args
        self.ports = [int(p) for p in args.ports.split(",")]
        self.locations = args.locations.split(",")
        self.headers = {
            "Authorization": "Bearer " + os.environ["MIX_TOKEN"],
            "Content-Type": "application/json",
        }
        with open(args.ids) as f:
            self.live = [int(line) for line in f if line.strip()]
        self.busy = set()
        self.rng = random.Random(args.seed)
        self.lock = threading.Lock()
        self.next_slot = 0
        self.start = time.monotonic() + 0.05
        self.end = self.start + args.warmup + args.duration
        self.slots = int(args.rate * (args.warmup + args.duration))
        self.latencies, self.errors, self.statuses, self.missed = [], 0, {}, 0
        self.max_lag = 0.0
        self.log = open(args.log, "w") if args.log else None
        if self.log:
            self.log.write("due_s,sent_s,ack_ms,kind,status\n")

    def price(self):
        return f"{self.rng.randint(20_000, 3_500_000)}.{self.rng.randint(0, 99):02d}"

    def pick(self, slot):
        """The next write: (kind, method, path, body, id), under the lock."""
        kinds, weights = zip(*MIX)
        kind = self.rng.choices(kinds, weights)[0]
        if kind == "create" or len(self.live) <= len(self.busy):
            body = {
                "title": f"Bench listing {slot}",
                "description": "Added by bench/mix's writer.",
                "price": self.price(),
                "location": self.rng.choice(self.locations),
            }
            return "create", "POST", "/properties/", body, None
        while True:
            i = self.rng.randrange(len(self.live))
            if self.live[i] not in self.busy:
                break
        pid = self.live[i]
        self.busy.add(pid)
        if kind == "delete":
            self.live[i] = self.live[-1]
            self.live.pop()
            return kind, "DELETE", f"/properties/{pid}/", None, pid
        field = self.price() if kind == "price" else self.rng.choice(self.locations)
        return kind, "PATCH", f"/properties/{pid}/", {kind: field}, pid

    def send(self, connections, port, method, path, body):
        """(status, body) of one request on this thread's connection to port."""
        conn = connections.get(port)
        if conn is None:
            conn = connections[port] = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request(method, path, None if body is None else json.dumps(body), self.headers)
            response = conn.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            del connections[port]
            return type(e).__name__, b""

    def run_thread(self):
        connections = {}
        while True:
            with self.lock:
                slot = self.next_slot
                self.next_slot += 1
            if slot >= self.slots:
                return
            due = self.start + slot / self.args.rate
            due_in_window = due >= self.start + self.args.warmup
            time.sleep(max(0.0, due - time.monotonic()))
            with self.lock:
                if time.monotonic() >= self.end:
                    self.missed += due_in_window
                    continue
                kind, method, path, body, pid = self.pick(slot)
            began = time.monotonic()
            port = self.ports[slot % len(self.ports)]
            status, answer = self.send(connections, port, method, path, body)
            took = time.monotonic() - began
            with self.lock:
                self.busy.discard(pid)
                if kind == "create" and status == 201:
                    self.live.append(json.loads(answer)["id"])
                if self.log:
                    self.log.write(f"{due - self.start:.3f},{began - self.start:.3f},{took * 1000:.1f},{kind},{status}\n")
                if began + took >= self.start + self.args.warmup:
                    self.latencies.append(took)
                    self.max_lag = max(self.max_lag, began - due)
                    if status != EXPECTED[kind]:
                        self.errors += 1
                        self.statuses[f"{kind}:{status}"] = self.statuses.get(f"{kind}:{status}", 0) + 1

    def run(self):
        threads = [threading.Thread(target=self.run_thread) for _ in range(self.args.connections)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with open(self.args.ids, "w") as f:
            f.writelines(f"{pid}\n" for pid in sorted(self.live))
        lat = sorted(ms * 1000 for ms in self.latencies)
        statuses = ",".join(f"{k}x{v}" for k, v in sorted(self.statuses.items())) or "-"
        print(
            f"WRITER writes={len(lat)} rate={len(lat) / self.args.duration:.1f}"
            f" p50_ms={percentile(lat, 50):.1f} p99_ms={percentile(lat, 99):.1f} max_ms={max(lat, default=0):.1f}"
            f" errors={self.errors} statuses={statuses} missed={self.missed}"
            f" max_lag_ms={self.max_lag * 1000:.0f}"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ports", required=True, help="comma-separated; writes take turns")
    parser.add_argument("--rate", type=float, required=True, help="writes per second")
    parser.add_argument("--warmup", type=float, default=0.0, help="seconds not measured")
    parser.add_argument("--duration", type=float, required=True, help="seconds measured")
    parser.add_argument("--ids", required=True, help="file of live ids, rewritten at the end")
    parser.add_argument("--locations", required=True, help="comma-separated")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--log", help="a CSV line for every write")
    Writer(parser.parse_args()).run()


if __name__ == "__main__":
    main()
