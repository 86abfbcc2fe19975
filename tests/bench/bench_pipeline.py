"""Tick-to-order latency through every process, and its bare floor in the same run
-> logs/bench/pipeline.json

The whole pipeline runs under supervisord against the simulator (real tape, a low confidence
bar so it trades often): live at speed 1 (a bar closes once a second, idle between) and fast at
speed 40 (make bench runs the fast one; the live one needs the features warm, ~15 minutes of
market time, so it is opt-in: --live-s 1200). Every entry carries the hop timestamps of the tick that closed its bar (tick received
by the feed ... order acknowledged by the simulator); the order gateway summarises them and
publishes median and p99 per hop in its heartbeat, read here at the end.

The floor, measured in the same run, at the same cadence, on the same machine and simulator: a
bare chain of three processes with the pipeline's shape and payloads and none of its code —
this process PUBlishes an encoded Quote (the feed) -> a relay SUBscribes, runs a bare
`session.run` of the shipped model and PUBlishes it on (inference) -> a relay SUBscribes and
REQuests (engine) -> a REP server POSTs a limit order to the simulator's /api/Order/place over
a keep-alive session and answers (order gateway; the order, far from the market, is cancelled
after the timing, off the clock). The floor is the wall time from the PUB to the REP answer.
It fires once a second at speed 1 and every 200 ms at speed 40 (each fire places and cancels an order on the
simulator the pipeline trades on, so not every bar).

    .venv/bin/python -m tests.bench.bench_pipeline [--fast-s 75] [--live-s 1200]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import zmq

from common.bus import Subscriber
from common.config import load_config
from common.hops import SEGMENTS
from common.messages import Heartbeat, Quote, encode
from tests.bench._kit import ROOT, machine, ratio, stats, write
from tests.harness.config import write_config
from tests.harness.pipeline import Pipeline
from tests.harness.sim import SimProcess

DAY = "2026-11-23"


def relay(role: str, a: str, b: str, extra: list[str]) -> None:
    """One process of the bare floor chain (see the module doc)."""
    ctx = zmq.Context.instance()
    if role == "inference":
        import numpy as np

        from common.config import ModelConfig
        from services.inference.model import load_model
        from services.inference.features import FEATURE_NAMES
        model = load_model(ROOT / ModelConfig().path, ROOT / ModelConfig().config, list(FEATURE_NAMES))
        x = np.zeros((1, len(FEATURE_NAMES)), dtype=np.float32)
        sub, pub = ctx.socket(zmq.SUB), ctx.socket(zmq.PUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(a)
        pub.bind(b)
        print("ready", flush=True)
        while True:
            parts = sub.recv_multipart()
            model.session.run(["probs"], {"features": x})
            pub.send_multipart(parts)
    elif role == "engine":
        sub, req = ctx.socket(zmq.SUB), ctx.socket(zmq.REQ)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(a)
        req.connect(b)
        out = open(extra[0], "w")
        print("ready", flush=True)
        while True:
            topic, frame, t0 = sub.recv_multipart()
            req.send(frame)
            req.recv()
            out.write(f"{time.time_ns() - int(t0)}\n")
            out.flush()
    elif role == "orders":
        import requests
        base_url, token, account, contract = extra
        http = requests.Session()
        http.headers["Authorization"] = f"Bearer {token}"
        rep = ctx.socket(zmq.REP)
        rep.bind(a)
        print("ready", flush=True)
        n = 0
        while True:
            frame = rep.recv()
            n += 1
            j = http.post(f"{base_url}/api/Order/place", json={
                "accountId": int(account), "contractId": contract, "type": 1, "side": 0, "size": 1,
                "limitPrice": 100.0, "customTag": f"floor:{os.getpid()}:{n}"}, timeout=10).json()
            rep.send(frame)
            if j.get("orderId"):
                http.post(f"{base_url}/api/Order/cancel", json={"accountId": int(account), "orderId": j["orderId"]},
                          timeout=10)


class FloorChain:
    def __init__(self, tmp: Path, sim: SimProcess):
        self.tmp = tmp
        eps = {k: f"ipc://{tmp}/floor-{k}.sock" for k in ("feed", "inference", "orders")}
        self.out = tmp / "floor.txt"
        self.procs = [self._start("orders", eps["orders"], "-", sim.base_url, sim.token(), str(sim.account_id),
                                  sim.contract_id),
                      self._start("inference", eps["feed"], eps["inference"]),
                      self._start("engine", eps["inference"], eps["orders"], str(self.out))]
        self.pub = zmq.Context.instance().socket(zmq.PUB)
        self.pub.bind(eps["feed"])
        self.frame = encode(Quote("CON.F.US.MES.H26", 24201, 24202, 24201, time.time_ns(), time.time_ns()),
                            seq=1, ts_ns=time.time_ns(), src="floor", epoch=1)
        time.sleep(0.5)               # slow joiners
        self.next_at = 0.0

    def _start(self, role: str, a: str, b: str, *extra: str) -> subprocess.Popen:
        p = subprocess.Popen([sys.executable, "-m", "tests.bench.bench_pipeline", "--relay", role, a, b, *extra],
                             cwd=ROOT, stdout=subprocess.PIPE)
        assert p.stdout.readline().strip() == b"ready", f"floor relay {role} did not start"
        return p

    def tick(self, every_s: float) -> None:
        if time.monotonic() >= self.next_at:
            self.next_at = time.monotonic() + every_s
            self.pub.send_multipart((b"Quote", self.frame, str(time.time_ns()).encode()))

    def close(self) -> list[int]:
        for p in self.procs:
            p.kill()
            p.wait()
            p.stdout.close()
        self.pub.close(0)
        return [int(x) for x in self.out.read_text().split()] if self.out.exists() else []


HOTPATH_OFF = {"gc_freeze": False, "gc_on_idle": False, "warm_before_ms": 0, "switch_interval_ms": 5}


def run(tmp: Path, speed: float, seconds: float, floor_every_s: float, hotpath: dict | None = None) -> dict:
    # faster than live the pipeline trades more often per wall minute than it would live, which
    # would spend the account's REST budget: the budget is lifted on both sides, as in bench_orders
    with SimProcess(tmp / "sim", speed=speed, time_mode="start_at", start_at=f"{DAY}T10:00:00", loop=True,
                    rate_limit_per_min=100000) as sim:
        cfg_path = write_config(tmp, sim, model={"min_confidence": 0.38}, api={"rate_limit_per_min": 100000},
                                risk={"max_consecutive_losses": 1000, "max_daily_loss": 100000},
                                logging={"dir": str(tmp / "logs"), "level": "INFO", "console": False},
                                **({"hotpath": hotpath} if hotpath else {}))
        cfg = load_config(cfg_path)
        with Pipeline(tmp, cfg_path):
            floor = FloorChain(tmp, sim)
            sub = Subscriber("bench", cfg.bus.orders_pub, None, topics=[Heartbeat])
            started, hb = time.monotonic(), {}
            try:
                while time.monotonic() - started < seconds:
                    for env in sub.recv(20):
                        if isinstance(env.msg, Heartbeat) and env.msg.service == "orders":
                            hb = env.msg.stats
                    floor.tick(floor_every_s)
                entries = [o for o in sim.state()["orders"] if ":entry:" in (o.get("customTag") or "")]
            finally:
                bare = floor.close()
                sub.close()
    hops = {name: {"median_us": hb.get(f"hop_{name}_us_p50"), "p99_us": hb.get(f"hop_{name}_us_p99")}
            for name in list(SEGMENTS.values()) + ["total"] if f"hop_{name}_us_p50" in hb}
    total = hops.get("total") or {}
    ours = {"n": len(entries), "median": total.get("median_us"), "p99": total.get("p99_us")} if total else {"n": 0}
    fl = stats(bare)
    ours_part = [n for n in hops if n not in ("total", "broker_ack", "bar_wait")]
    return {"speed": speed, "seconds": seconds, "unit": "us", "entries": len(entries),
            "tick_to_order_ack": ours, "floor_bare_chain": fl, "ratio_to_floor": ratio(ours, fl) if total else {},
            "hops": {n: h for n, h in hops.items() if n != "total"},
            "our_part_sum_of_hop_medians_us": round(sum(hops[n]["median_us"] or 0 for n in ours_part), 1),
            "our_part_hops": ours_part}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--live-s", type=float, default=float(os.environ.get("BENCH_PIPELINE_LIVE_S", "0")),
                    help="also run at speed 1 for this long (the features need ~15 min of market time to warm "
                         "up before the first entry, so give it >= 1200 s); 0 = skip")
    ap.add_argument("--fast-s", type=float, default=float(os.environ.get("BENCH_PIPELINE_FAST_S", "75")))
    ap.add_argument("--hotpath-off", action="store_true", help="CPython's gc, no warm-up, 5 ms GIL switch (A/B)")
    args = ap.parse_args()
    result = {"bench": "pipeline", "hotpath": "off" if args.hotpath_off else "on (config defaults)", "machine": machine(),
              "what": "tick received by the feed -> entry order acknowledged by the simulator, through feed, "
                      "inference, engine and order gateway processes (loopback, ipc sockets)"}
    tmp = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    result["fast"] = {"cadence": {"name": "fast", "note": "speed 40, a bar every 25 ms; the floor fires every 200 ms (each fire places and cancels an order on the shared simulator)"},
                      **run(tmp / "fast", 40.0, args.fast_s, 0.2, HOTPATH_OFF if args.hotpath_off else None)}
    if args.live_s > 0:
        result["live"] = {"cadence": {"name": "live", "note": "speed 1: a bar a second; the floor fires once a second"},
                          **run(tmp / "live", 1.0, args.live_s, 1.0)}
    else:
        result["live"] = {"skipped": "the features warm up on ~15 min of market time before the first entry; "
                                     "run with --live-s 1200 for the live cadence end to end. The live cadence of "
                                     "each stage is in bus.json, inference.json, feed.json and orders.json."}
    result["goal"] = {"tick_to_order_ack_p99_us": 5000, "ratio_to_floor_p99": 1.2,
                      "our_part_tick_to_order_on_wire_p99_us": 1500}
    result["spec_limit_order_placement_ms"] = 500
    write("pipeline_hotpath_off" if args.hotpath_off else "pipeline", result)
    return 0 if result["fast"]["tick_to_order_ack"].get("median") else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--relay":
        relay(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:])
    else:
        raise SystemExit(main())
