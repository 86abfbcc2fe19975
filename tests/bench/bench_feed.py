"""Feed benchmarks -> logs/bench/feed.json

1. Quote latency: hub send -> feed process -> subscriber of the feed socket.
   The hub (an in-process SignalR server, tests/unit/test_hub.py FakeHub, until the
   simulator's market hub is used) stamps each quote's `timestamp` with the wall clock
   at send, so latency = subscriber receive wall time - exch_ns. Hops split it:
   ws+parse (tick_recv - exch), in-process (feed_pub - tick_recv), bus (recv - feed_pub).
2. Replay throughput at --speed max over the real session file (converted), uncapped
   and at the configured rate cap, scaled to a 7-hour session.

    .venv/bin/python -m tests.bench.bench_feed
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from common.bus import Subscriber
from common.config import load_config
from common.messages import Quote
from services.replay.convert import convert
from tests.harness.config import write_config
from tests.harness.procs import ROOT, wait_for

C = "CON.F.US.MES.H26"


def pct(xs: list[float]) -> dict:
    s = sorted(xs)
    return {"median": round(statistics.median(s), 1), "p99": round(s[max(0, int(0.99 * len(s)) - 1)], 1),
            "max": round(s[-1], 1), "n": len(s)}


def iso_ns(ns: int) -> str:
    dt = datetime.fromtimestamp(ns // 10**9, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ns % 10**9:09d}+00:00"


def bench_latency(tmp: Path, n: int = 3000) -> dict:
    from tests.integration.test_feed_process import Collector, start, subscribed, synced
    from tests.unit.test_hub import FakeHub
    hub = FakeHub()
    cfg, sub, proc = start(tmp, hub)
    col = Collector(sub)
    total, wsparse, inproc, bus = [], [], [], []
    try:
        wait_for(subscribed(hub, 2), 15, what="subscriptions")
        wait_for(synced(col), 5, what="sync")
        col.envs.clear()
        for i in range(n):
            sent = time.time_ns()
            bid = 5000 + 0.25 * (i % 8)
            hub.push("GatewayQuote", C, {"bestBid": bid, "bestAsk": bid + 0.25, "lastPrice": bid,
                                         "timestamp": iso_ns(sent)})
            deadline = time.monotonic() + 1
            while time.monotonic() < deadline:
                got = [e for e in sub.drain() if isinstance(e.msg, Quote) and not e.snapshot]
                if got:
                    now = time.time_ns()
                    e = got[-1]
                    total.append((now - e.msg.exch_ns) / 1000)
                    wsparse.append((e.hops["tick_recv"] - e.msg.exch_ns) / 1000)
                    inproc.append((e.hops["feed_pub"] - e.hops["tick_recv"]) / 1000)
                    bus.append((now - e.hops["feed_pub"]) / 1000)
                    break
                sub.sock.poll(1)
            time.sleep(0.001)
    finally:
        proc.terminate()
        hub.close()
    return {"unit": "us", "quotes_sent": n, "hub_send_to_subscriber": pct(total),
            "hub_send_to_tick_recv": pct(wsparse), "tick_recv_to_feed_pub": pct(inproc),
            "feed_pub_to_subscriber": pct(bus)}


def bench_replay(tmp: Path, rec: Path, max_rate: int) -> dict:
    cfg_path = write_config(tmp, replay={"start_delay_s": 0.3, "linger_s": 0.3, "max_rate": max_rate,
                                         "burst": 1000})
    cfg = load_config(cfg_path)
    sub = Subscriber("bench", cfg.bus.feed_pub, cfg.bus.feed_snap)
    t_start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "services.replay", str(rec), "--config", str(cfg_path),
                             "--speed", "max"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    n = 0
    first = last = None
    first_ns = last_ns = 0
    while True:
        got = sub.recv(300)
        if got:
            now = time.monotonic()
            first = first or now
            last = now
            for e in got:
                if e.type in ("Quote", "Trade"):
                    n += 1
                    first_ns = first_ns or e.msg.exch_ns
                    last_ns = e.msg.exch_ns
        elif proc.poll() is not None:
            break
    wall = (last - first) if first else 0.0
    session_h = (last_ns - first_ns) / 3.6e12
    rate = n / wall if wall else 0
    per_7h = wall / session_h * 7 if session_h else 0
    return {"max_rate_cap": max_rate, "messages": n, "session_hours": round(session_h, 2),
            "wall_s": round(wall, 2), "process_total_s": round(time.monotonic() - t_start, 2),
            "msgs_per_s": round(rate), "estimated_7h_session_s": round(per_7h, 1),
            "gaps_seen": sub.stats.gaps}


def main() -> None:
    out: dict = {"bench": "feed", "when": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        out["quote_latency"] = bench_latency(tmp / "lat")
        rec = tmp / "esm8.rec"
        convert(ROOT / "data" / "real" / "ESM8_2018-05-07_trades.csv.gz", rec, "CON.F.US.EP.M18")
        default_rate = 50_000
        out["replay_max_uncapped"] = bench_replay(tmp / "r1", rec, 10_000_000)
        out["replay_max_default_cap"] = bench_replay(tmp / "r2", rec, default_rate)
    path = ROOT / "logs" / "bench" / "feed.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
