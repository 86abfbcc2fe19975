"""What the order gateway keeps per round trip: a targeted, seconds-long cousin of probe_memory.

The gateway runs against the scripted broker of the unit tests (tests/unit/_scripted_broker.py):
N round trips (enter, stop and target placed, exit, legs cancelled), a REST reconciliation every
10 of them, and the gateway's memory trim between batches as if the pruning window had passed
(the live gateway runs it from its periodic flow). tracemalloc counts what is allocated in
services/orders and common (the broker's own book and call record are not counted).

    .venv/bin/python -m tests.bench.probe_gateway_book [--trips 600] [--warm 100]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
import tracemalloc
from pathlib import Path

from loguru import logger

from common.clock import EventClock
from common.config import Config
from common.messages import OrderCommand
from common.session import SessionCalendar
from services.orders.config import OrdersConfig
from services.orders.gateway import Gateway
from services.orders.journal import Journal
from tests.unit._scripted_broker import ACCT, ScriptedBroker

C = "CON.F.US.MES.H26"


def ours() -> int:
    snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, "*/services/orders/*"),
                                                      tracemalloc.Filter(True, "*/common/*")])
    return sum(s.size for s in snap.statistics("filename"))


def rss() -> int:
    """Resident set size in bytes (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trips", type=int, default=600)
    ap.add_argument("--warm", type=int, default=100)
    ap.add_argument("--no-trace", action="store_true", help="RSS only, no tracemalloc")
    args = ap.parse_args()
    logger.remove()
    tmp = Path(tempfile.mkdtemp(prefix="probe-gwbook-"))
    cfg = Config()
    sect = OrdersConfig(flat_verify_s=0.5, lookup_timeout_s=0.5, user_hub=False)
    broker = ScriptedBroker(C)
    journal = Journal(tmp / "orders.sqlite")
    gw = Gateway(cfg, sect, broker, journal, ACCT, lambda msg, key=None, forget=False: None, EventClock(0),
                 SessionCalendar.from_config(cfg.trading))
    trim = getattr(gw, "trim_memory", None)

    def settle() -> None:
        for _ in range(20):
            if not broker.deliver(gw):
                return

    def flow(gen):
        task = gw.spawn(gen, "probe")
        assert task.done and task.error is None, task.error

    flow(gw.reconcile(initial=True))
    if not args.no_trace:
        tracemalloc.start(1)
    at = {}
    t0 = time.perf_counter()
    for n in range(args.warm + args.trips):
        key = f"P{n}"
        rep = gw.handle(OrderCommand(key, "enter", contract=C, direction=1 if n % 2 else -1, size=1,
                                     stop_ticks=8, target_ticks=16))
        settle()
        assert rep.ok, rep
        rep = gw.handle(OrderCommand(f"X{n}", "exit", contract=C))
        settle()
        assert rep.ok, rep
        broker.calls.clear()                          # the scripted broker's record, not the gateway's
        if n % 10 == 9:
            flow(gw.reconcile())
            if trim is not None:
                trim(time.monotonic() + 3600, force=True)      # as if the pruning window had passed
        if n + 1 == args.warm:
            at["warm"], at["rss_warm"] = ours() if not args.no_trace else 0, rss()
    at["end"], at["rss_end"] = ours() if not args.no_trace else 0, rss()
    grew = at["end"] - at["warm"]
    print(json.dumps({"probe": "gateway_book", "trips_measured": args.trips, "warm_trips": args.warm,
                      "bytes_after_warmup": at["warm"], "bytes_at_end": at["end"], "grew_bytes": grew,
                      "bytes_per_trip": round(grew / args.trips),
                      "rss_grew_kb": (at["rss_end"] - at["rss_warm"]) // 1024, "book_orders": len(getattr(gw, "book", ())),
                      "seconds": round(time.perf_counter() - t0, 1)}))
    journal.close()


if __name__ == "__main__":
    main()
