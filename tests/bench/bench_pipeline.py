"""Tick-to-order latency through every process, and its bare floor in the same run
-> logs/bench/pipeline.json

The whole pipeline runs under supervisord against the simulator (real tape, a low confidence
bar, out-of-range features flagged rather than blocking, and positions held at most 10 s of
market time, so it enters often), first fast at speed 40
(a bar every 25 ms; the first ~25 s also warm the features up on ~15 minutes of market time),
then live: the simulator switches to speed 1 (`/sim/control/speed`, the tape keeping its place)
and the same warm processes run at one bar a second, idle between. Every entry carries the hop
timestamps of the tick that closed its bar (tick received by the feed ... order acknowledged by
the simulator); the order gateway summarises them per segment in its heartbeat (read at the end
of the fast phase) and carries the last entries' whole chains (the live phase keeps every chain
whose tick came after the switch).

The floor, measured in the same run, at the same cadence, on the same machine and simulator: a
bare chain of three processes with the pipeline's shape and payloads and none of its code —
this process PUBlishes an encoded Quote (the feed) -> a relay SUBscribes, runs a bare
`session.run` of the shipped model and PUBlishes it on (inference) -> a relay SUBscribes and
REQuests (engine) -> a REP server POSTs a limit order to the simulator's /api/Order/place over
a keep-alive session and answers (order gateway; the order, far from the market, is cancelled
after the timing, off the clock). The floor is the wall time from the PUB to the REP answer.
Each relay stamps the wall time it received and sent on, so the floor is also there per hop
(`floor_hops`) and each of our segments stands beside the floor hop it contains (`hops_vs_floor`).
It fires once a second at speed 1 and every 200 ms at speed 40 (each fire places and cancels an order on the
simulator the pipeline trades on, so not every bar).

    .venv/bin/python -m tests.bench.bench_pipeline [--fast-s 40] [--live-s 90]
"""
from __future__ import annotations

import argparse
import json
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
            received = time.time_ns()
            model.session.run(["probs"], {"features": x})
            pub.send_multipart([*parts, b"%d" % received, b"%d" % time.time_ns()])
    elif role == "engine":
        sub, req = ctx.socket(zmq.SUB), ctx.socket(zmq.REQ)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(a)
        req.connect(b)
        out = open(extra[0], "w")
        print("ready", flush=True)
        while True:
            topic, frame, *stamps = sub.recv_multipart()
            stamps.append(b"%d" % time.time_ns())
            req.send(frame)
            _, *answered = req.recv_multipart()
            stamps += answered
            stamps.append(b"%d" % time.time_ns())
            out.write(" ".join(x.decode() for x in stamps) + "\n")
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
            received = time.time_ns()
            n += 1
            j = http.post(f"{base_url}/api/Order/place", json={
                "accountId": int(account), "contractId": contract, "type": 1, "side": 0, "size": 1,
                "limitPrice": 100.0, "customTag": f"floor:{os.getpid()}:{n}"}, timeout=10).json()
            rep.send_multipart([frame, b"%d" % received, b"%d" % time.time_ns()])
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

    def chains(self) -> list[list[int]]:
        """Every chain so far, in order: the wall times (ns) it was published, received and sent
        on by the inference relay, received by the engine relay, received and answered by the
        order relay (after its POST), and the answer received by the engine relay."""
        lines = self.out.read_text().splitlines() if self.out.exists() else []
        return [[int(x) for x in line.split()] for line in lines if len(line.split()) == len(FLOOR_HOPS) + 1]

    def close(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()
            p.stdout.close()
        self.pub.close(0)


# the floor chain per hop, each named after the pipeline segment it is the floor of
FLOOR_HOPS = ("bus_to_worker", "inference", "bus_to_engine", "command", "broker_ack", "answer")


def floor_hops(chains: list[list[int]]) -> dict:
    """Per hop of the floor chain, median / p99 (us), and the whole chain."""
    out = {name: stats([c[i + 1] - c[i] for c in chains]) for i, name in enumerate(FLOOR_HOPS)}
    return out | {"total": stats([c[-1] - c[0] for c in chains])}


HOTPATH_OFF = {"gc_freeze": False, "gc_on_idle": False, "warm_before_ms": 0, "switch_interval_ms": 5}
# A position is held at most this long (market time), any call off the flat class enters (0.34) and
# out-of-range features only flag, so the pipeline enters every few bars at speed 1 too; this
# changes how often the path is taken, not the path.
HOLD_S = 10
OUR_PART = ("feed", "features", "inference", "signal", "command", "order_prep")
# a bar the feed's heartbeat closed (no tick crossed its end) has no tick hops: from the close on
FROM_CLOSE = ("features", "inference", "signal", "command", "order_prep", "broker_ack")


class Watch:
    """The order gateway's heartbeats: its latest stats, and every entry's whole hop chain
    (`hops_recent`, the last ten) by the wall time its tick was received; and the worker's,
    the engine's and the gateway's hot-path counters (did their bars land in the warm window)."""

    def __init__(self, bus):
        self.sub = Subscriber("bench", bus.orders_pub, None, topics=[Heartbeat])
        self.others = [Subscriber("bench", ep, None, topics=[Heartbeat]) for ep in (bus.inference_pub, bus.engine_pub)]
        self.stats: dict = {}
        self.hot: dict[str, dict] = {}
        self.chains: dict[int, dict[str, float]] = {}

    def poll(self) -> None:
        for sub in self.others:
            for env in sub.drain():
                if isinstance(env.msg, Heartbeat) and "hotpath" in env.msg.stats:
                    self.hot[env.msg.service] = env.msg.stats["hotpath"]
        for env in self.sub.recv(20):
            if isinstance(env.msg, Heartbeat) and env.msg.service == "orders":
                self.stats = env.msg.stats
                self.hot["orders"] = self.stats.get("hotpath") or {}
                for chain in self.stats.get("hops_recent") or []:
                    self.chains[int(chain["at_ns"])] = chain

    def bars_in_window(self, before: dict[str, dict] | None = None) -> dict[str, dict]:
        """Per service, the per-bar events (worker: bar closed; engine: prediction read; gateway:
        entry) that landed inside the warm window and outside it, since `before`."""
        out = {}
        for name, hot in sorted(self.hot.items()):
            prev = (before or {}).get(name, {})
            warm = hot.get("bars_warm", 0) - prev.get("bars_warm", 0)
            cold = hot.get("bars_cold", 0) - prev.get("bars_cold", 0)
            out[name] = {"warm": warm, "cold": cold, "warm_share": round(warm / (warm + cold), 3) if warm + cold else None}
        return out

    def close(self) -> None:
        self.sub.close()
        for sub in self.others:
            sub.close()


def from_heartbeat(hb: dict) -> dict:
    """The gateway's HopStats summary (its last 2,000 entries) -> per segment median / p99."""
    return {name: {"median_us": hb.get(f"hop_{name}_us_p50"), "p99_us": hb.get(f"hop_{name}_us_p99")}
            for name in list(SEGMENTS.values()) + ["total"] if f"hop_{name}_us_p50" in hb}


def from_chains(chains: list[dict[str, float]]) -> dict:
    """Whole chains (us per segment) -> per segment median / p99, and our part per entry."""
    out = {}
    for name in list(SEGMENTS.values()) + ["total"]:
        # a bar closed by the clock, not by a tick, has no tick hops: its total is no tick -> ack
        xs = [c[name] for c in chains if name in c and (name != "total" or "feed" in c)]
        if xs:
            st = stats(xs, unit_ns=1.0)
            out[name] = {"median_us": st["median"], "p99_us": st["p99"], "max_us": st["max"], "n": st["n"]}
    return out


# our segment -> the floor hop it is compared with (ours does more: see the notes)
VERSUS = {"bar_wait": ("bus_to_worker", "ours also waits for the bar to close"),
          "inference": ("inference", "the same model, session.run alone"),
          "signal": ("bus_to_engine", "ours also decides (engine)"),
          "command": ("command", "REQ one way; ours encodes, the gateway's ROUTER decodes"),
          "broker_ack": ("broker_ack", "one POST; ours goes through the gateway's REST client")}


def summarise(hops: dict, floor: list[list[int]], entries: int, our_part: dict | None = None) -> dict:
    total = hops.get("total") or {}
    ours = {"n": entries, "median": total.get("median_us"), "p99": total.get("p99_us")} if total else {"n": 0}
    per_hop = floor_hops(floor)
    fl = per_hop.pop("total")
    ours_part = [n for n in hops if n in OUR_PART]
    versus = {}
    for seg, (hop, note) in VERSUS.items():
        if seg in hops and per_hop[hop].get("n"):
            mine = {"n": 1, "median": hops[seg]["median_us"], "p99": hops[seg]["p99_us"]}
            versus[seg] = {"ours_us": [mine["median"], mine["p99"]],
                           "floor_us": [per_hop[hop]["median"], per_hop[hop]["p99"]],
                           "ratio": ratio(mine, per_hop[hop]), "floor_hop": hop, "note": note}
    out = {"unit": "us", "entries": entries, "tick_to_order_ack": ours, "floor_bare_chain": fl,
           "ratio_to_floor": ratio(ours, fl) if total else {},
           "hops": {n: h for n, h in hops.items() if n != "total"},
           "floor_hops": per_hop, "hops_vs_floor": versus,
           "our_part_sum_of_hop_medians_us": round(sum(hops[n]["median_us"] or 0 for n in ours_part), 1),
           "our_part_hops": ours_part}
    if our_part is not None:
        out["our_part_tick_to_order_on_wire"] = our_part
    return out


def run(tmp: Path, fast_s: float, live_s: float, settle_s: float = 3.0, hotpath: dict | None = None) -> dict:
    """One pipeline on one simulator: `fast_s` at speed 40 (a bar every 25 ms; this also warms the
    features up on ~15 minutes of market time), then, if `live_s`, the simulator switches to speed 1
    (`/sim/control/speed`) and the same processes run `live_s` at one bar a second. The floor chain
    runs beside them throughout, at the cadence of the phase."""
    # faster than live the pipeline trades more often per wall minute than it would live, which
    # would spend the account's REST budget: the budget is lifted on both sides, as in bench_orders
    with SimProcess(tmp / "sim", speed=40.0, time_mode="start_at", start_at=f"{DAY}T10:00:00", loop=True,
                    rate_limit_per_min=100000) as sim:
        cfg_path = write_config(tmp, sim, model={"min_confidence": 0.34, "max_holding_s": HOLD_S, "range_policy": "flag"},
                                api={"rate_limit_per_min": 100000},
                                risk={"max_consecutive_losses": 1000, "max_daily_loss": 100000},
                                logging={"dir": str(tmp / "logs"), "level": "INFO", "console": False},
                                **({"hotpath": hotpath} if hotpath else {}))
        cfg = load_config(cfg_path)
        out: dict = {}
        with Pipeline(tmp, cfg_path):
            floor = FloorChain(tmp, sim)
            watch = Watch(cfg.bus)
            try:
                started = time.monotonic()
                while time.monotonic() - started < fast_s:
                    watch.poll()
                    floor.tick(0.2)
                entries = len(entry_orders(sim))
                out["fast"] = {"speed": 40.0, "seconds": fast_s,
                               **summarise(from_heartbeat(watch.stats), floor.chains(), entries),
                               "bars_in_warm_window": watch.bars_in_window()}
                if live_s > 0:
                    sim.control("speed", speed=1.0)
                    started = time.monotonic()
                    while time.monotonic() - started < settle_s:     # what was under way at speed 40 ends
                        watch.poll()
                    live_from_ns, floor_from, entries_from = time.time_ns(), len(floor.chains()), entries
                    hot_from = {k: dict(v) for k, v in watch.hot.items()}
                    started = time.monotonic()
                    while time.monotonic() - started < live_s:
                        watch.poll()
                        floor.tick(1.0)
                    time.sleep(1.5)                                  # the last entry's heartbeat
                    watch.poll()
                    chains = [c for at, c in sorted(watch.chains.items()) if at >= live_from_ns]
                    ours = [sum(c.get(n, 0.0) for n in OUR_PART) for c in chains if "feed" in c]
                    part = stats(ours, unit_ns=1.0) | {"what": "per entry, the sum of " + ", ".join(OUR_PART)}
                    # every entry, from its bar's close: beside the floor chain from the worker relay on
                    from_close = stats([sum(c.get(n, 0.0) for n in FROM_CLOSE) for c in chains], unit_ns=1.0)
                    floor_from_worker = stats([c[-1] - c[1] for c in floor.chains()[floor_from:]])
                    out["live"] = {"speed": 1.0, "seconds": live_s, "warmed_at_speed_40_s": fast_s,
                                   "settle_s": settle_s,
                                   **summarise(from_chains(chains), floor.chains()[floor_from:], len(chains), part),
                                   "entries_without_tick_hops": sum("feed" not in c for c in chains),
                                   "bar_close_to_order_ack": from_close, "floor_from_worker_relay": floor_from_worker,
                                   "bar_close_ratio_to_floor": ratio(from_close, floor_from_worker),
                                   "entry_orders_placed": len(entry_orders(sim)) - entries_from,
                                   "bars_in_warm_window": watch.bars_in_window(hot_from),
                                   "hotpath_stats_at_end": watch.hot}
            finally:
                floor.close()
                watch.close()
    return out


def entry_orders(sim: SimProcess) -> list[dict]:
    return [o for o in sim.state()["orders"] if ":entry:" in (o.get("customTag") or "")]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fast-s", type=float, default=float(os.environ.get("BENCH_PIPELINE_FAST_S", "40")),
                    help="seconds at speed 40; the first ~25 s warm the features up (15 min of market time)")
    ap.add_argument("--live-s", type=float, default=float(os.environ.get("BENCH_PIPELINE_LIVE_S", "90")),
                    help="then this long at speed 1 on the same simulator and processes; 0 = skip")
    ap.add_argument("--hotpath", default=None, help="JSON: hotpath config keys for this run (A/B)")
    ap.add_argument("--hotpath-off", action="store_true", help="CPython's gc, no warm-up, 5 ms GIL switch (A/B)")
    args = ap.parse_args()
    result = {"bench": "pipeline", "hotpath": "off" if args.hotpath_off else "on (config defaults)", "machine": machine(),
              "what": "tick received by the feed -> entry order acknowledged by the simulator, through feed, "
                      "inference, engine and order gateway processes (loopback, ipc sockets)"}
    tmp = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    phases = run(tmp, args.fast_s, args.live_s, hotpath=HOTPATH_OFF if args.hotpath_off else (json.loads(args.hotpath) if args.hotpath else None))
    result["fast"] = {"cadence": {"name": "fast", "note": "speed 40, a bar every 25 ms; the floor fires every 200 ms "
                                                          "(each fire places and cancels an order on the shared simulator); "
                                                          "hops from the gateway's HopStats in its heartbeat"},
                      **phases["fast"]}
    if "live" in phases:
        result["live"] = {"cadence": {"name": "live", "note": "speed 1 after the fast phase warmed the features, same "
                                                              "processes: a bar a second; the floor fires once a second; "
                                                              "hops from every entry's whole chain (hops_recent in the "
                                                              "gateway's heartbeat) whose tick came after the switch"},
                          **phases["live"]}
    else:
        result["live"] = {"skipped": "--live-s 0"}
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
