"""Feed benchmarks -> logs/bench/feed.json

1. Quote latency against the REAL simulator (its market hub, time_mode now): simulator send ->
   feed process -> subscriber of the feed socket, and the floor measured on the same
   quotes: a bare WebSocket client (own process) subscribed to the same hub. Live cadence: the
   tape at speed 1; fast: speed 20. BENCH_FEED_S seconds each (default 20).
2. Replay throughput at --speed max over the real session file (converted), uncapped (and at
   the configured rate cap with BENCH_FEED_CAPPED=1), scaled to a 7-hour session.

    .venv/bin/python -m tests.bench.bench_feed
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common.bus import Subscriber
from common.config import load_config
from common.messages import Heartbeat, Quote
from services.replay.convert import convert
from tests.harness.config import write_config
from tests.bench._kit import ROOT, machine, ratio, stats, write

RS = "\x1e"
SECONDS = float(os.environ.get("BENCH_FEED_S", "20"))


def bare_client(url: str, contract: str, out_path: str, seconds: float) -> None:
    """The floor: a bare WebSocket client (websockets, sync) speaking SignalR JSON to the same
    simulator, recording each quote's exchange time and its own receive wall time. Runs in its
    own process (no GIL shared with the subscriber measuring the feed)."""
    from websockets.sync.client import connect

    from services.sim.wire import parse_iso
    rows = []
    end = time.monotonic() + seconds
    with connect(url, max_size=None) as ws:
        ws.send(json.dumps({"protocol": "json", "version": 1}) + RS)
        buf, subscribed = "", False
        print("ready", flush=True)
        while time.monotonic() < end:
            try:
                msg = ws.recv(timeout=0.5)
            except TimeoutError:
                continue
            now = time.time_ns()
            buf += msg if isinstance(msg, str) else msg.decode()
            *records, buf = buf.split(RS)
            for rec in records:
                m = json.loads(rec)
                if not subscribed:
                    subscribed = True
                    ws.send(json.dumps({"type": 1, "target": "SubscribeContractQuotes", "arguments": [contract],
                                        "invocationId": "0"}) + RS)
                    continue
                if m.get("type") == 1 and m.get("target") == "GatewayQuote":
                    q = m["arguments"][1]
                    if "timestamp" in q:
                        rows.append((parse_iso(q["timestamp"]), now))
    Path(out_path).write_text("\n".join(f"{a} {b}" for a, b in rows))


def bench_latency(tmp: Path, speed: float, seconds: float) -> dict:
    """The real simulator (time_mode now: a tick's timestamp is the wall time it is due, so
    receive wall time - timestamp = send -> receive, plus any lateness of the simulator, which
    the floor sees too), the real feed process, and a bare WebSocket client on the same hub
    receiving the same quotes. Quotes are matched by their exchange timestamp."""
    from tests.harness.procs import ServiceProcess
    from tests.harness.sim import SimProcess
    tmp.mkdir(parents=True, exist_ok=True)
    with SimProcess(tmp / "sim", speed=speed, time_mode="now", loop=True) as sim:
        cfg_path = write_config(tmp, sim, feed={"stale_check": "never"},
                                logging={"dir": str(tmp / "logs"), "level": "INFO", "console": False})
        cfg = load_config(cfg_path)
        sub = Subscriber("bench", cfg.bus.feed_pub, None, topics=[Quote, Heartbeat])
        feed = ServiceProcess("feed", cfg_path).start()
        bare_out = tmp / "bare.txt"
        url = f"ws://127.0.0.1:{sim.port}/hubs/market?access_token={sim.token()}"
        bare = subprocess.Popen([sys.executable, "-m", "tests.bench.bench_feed", "--bare-client", url, sim.contract_id,
                                 str(bare_out), str(seconds + 3)], cwd=ROOT, stdout=subprocess.PIPE)
        try:
            assert bare.stdout.readline().strip() == b"ready"
            feed_rows, hops, end = {}, {}, time.monotonic() + seconds
            hot: dict = {}
            while time.monotonic() < end:
                if not sub.sock.poll(200):
                    continue
                now = time.time_ns()
                for e in sub.drain():
                    if isinstance(e.msg, Heartbeat):
                        hot = (e.msg.stats or {}).get("hotpath", hot)
                    elif isinstance(e.msg, Quote) and not e.snapshot:
                        feed_rows[e.msg.exch_ns] = now
                        hops[e.msg.exch_ns] = e.hops
            bare.wait(seconds + 30)
        finally:
            if bare.poll() is None:
                bare.kill()
            feed.terminate()
            sub.close()
    bare_rows = dict(tuple(map(int, line.split())) for line in bare_out.read_text().splitlines() if line)
    both = sorted(set(feed_rows) & set(bare_rows))
    if len(both) > 1:       # the first quotes arrive while the subscriptions settle
        both = both[1:]
    feed_lat = [feed_rows[k] - k for k in both]
    bare_lat = [bare_rows[k] - k for k in both]
    added = [feed_rows[k] - bare_rows[k] for k in both]
    f, b = stats(feed_lat), stats(bare_lat)
    absolute = {"sim_send_to_feed_subscriber": f, "sim_send_to_bare_ws_client": b, "ratio_to_bare": ratio(f, b)}
    return {"speed": speed, "seconds": seconds, "unit": "us", "quotes_matched": len(both),
            "quotes_feed": len(feed_rows), "quotes_bare": len(bare_rows),
            # above speed 1 a timestamp is market time, ahead of the wall clock: only the difference holds
            **(absolute if speed == 1.0 else {}),
            "feed_subscriber_minus_bare_client": stats(added),
            # the feed's own hot-path counters from its last heartbeat: its longest gc pause (goal < 2 ms)
            "feed_hotpath": {"gc_max_ms": hot.get("gc_max_ms"), **{k: v for k, v in hot.items() if k != "gc_max_ms"}},
            "feed_ws_recv_to_feed_pub": stats([hops[k]["feed_pub"] - hops[k]["tick_recv"] for k in both
                                               if "feed_pub" in hops[k] and "tick_recv" in hops[k]])}


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
    out: dict = {"bench": "feed", "machine": machine()}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        # live: the tape at speed 1 (quotes as the market made them, idle between)
        out["quote_latency_live"] = {"cadence": {"name": "live", "note": "the recorded tape at speed 1"},
                                     **bench_latency(tmp / "live", 1.0, SECONDS)}
        out["quote_latency_flat"] = {"cadence": {"name": "fast", "note": "the recorded tape at speed 20"},
                                     **bench_latency(tmp / "flat", 20.0, SECONDS / 2)}
        if os.environ.get("BENCH_FEED_REPLAY", "1") == "0":     # the quote latency alone
            write("feed", out)
            return
        rec = tmp / "esm8.rec"
        convert(ROOT / "data" / "real" / "ESM8_2018-05-07_trades.csv.gz", rec, "CON.F.US.EP.M18")
        out["replay_max_uncapped"] = bench_replay(tmp / "r1", rec, 10_000_000)
        if os.environ.get("BENCH_FEED_CAPPED"):     # the configured cap (50,000/s) seldom binds: opt in
            out["replay_max_default_cap"] = bench_replay(tmp / "r2", rec, 50_000)
    out["goal"] = {"sim_send_to_feed_subscriber_p99_us": 2000, "feed_hotpath.gc_max_ms": 2.0}
    write("feed", out)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--bare-client":
        bare_client(sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]))
    else:
        main()
