"""Order gateway benchmark -> logs/bench/orders.json

Real simulator + real gateway process on loopback, reconciliation polls ON (the gateway's default
poll_s / idle_poll_s). Entry/exit round trips, flat out and at the live cadence (one entry per
1 s idle period; tests/bench/_kit.py). Measured inside the gateway with perf_counter (samples
read back through the status command):
  - command received -> REST request on the wire (Order/place handed to the connection)
  - command received -> simulator acknowledgement (Order/place answered)
  - entry fill event received -> stop and target both acknowledged ("entry to protected")
and, outside, the engine's view: REQ send -> OrderReply received.

Two bracket modes, each against its own simulator:
  - "client_side" (orders.native_brackets off, an account in Position Brackets mode): the gateway
    places the stop and the target after the fill (two REST calls, sent side by side);
  - "native" (Auto-OCO account, native_brackets auto): the stop and target are the broker's bracket
    children, created with the entry and working at the fill. Protection needs no REST call after
    the fill (counted: the gateway's protect_calls, and no client-side leg at the broker); the
    figure is the gateway's own view, fill received -> both children known and sized.

The floor, in the same run against the same simulator at the same cadence, before the gateway
starts (so its reconciliation never meets orders that are not its own): a bare keep-alive
`requests` POST of the same market entry to /api/Order/place (floor of "command -> ack"), and a
stop then a limit POSTed in series (floor of "entry to protected", two REST calls).
The floor and the gateway take turns by phase (floor first), not per bar: on a loaded machine
compare medians, and re-run on a quiet one. The rate limits of both sides are raised for the run (latency, not budget, is measured).

    .venv/bin/python -m tests.bench.bench_orders [N_FLAT]
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import requests

from common.messages import Heartbeat, OrderCommand
from tests.bench._kit import BARS, IDLE_S, cadence, machine, ratio, stats, write
from tests.harness.procs import wait_for
from tests.harness.sim import SimProcess
from tests.integration.orders_helpers import Gw, positions, price, protected, working


class BarePost:
    """The floor: the simulator's Order/place over one keep-alive requests.Session, no gateway."""

    def __init__(self, sim: SimProcess):
        self.sim = sim
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {sim.token()}"
        self.base = {"accountId": sim.account_id, "contractId": sim.contract_id}
        self.n = 0

    def post(self, path: str, body: dict) -> dict:
        j = self.http.post(f"{self.sim.base_url}{path}", json=body, timeout=10).json()
        assert j.get("success"), j
        return j

    def round_trip(self) -> tuple[int, int]:
        """A market entry (timed), then a stop and a limit in series (timed together), then
        cancel and close (untimed). Returns (entry ns, protection ns)."""
        self.n += 1
        clock = time.perf_counter_ns
        t0 = clock()
        self.post("/api/Order/place", {**self.base, "type": 2, "side": 0, "size": 1, "customTag": f"bare:{self.n}"})
        t1 = clock()
        a = self.post("/api/Order/place", {**self.base, "type": 4, "side": 1, "size": 1, "stopPrice": 6048.0,
                                           "customTag": f"bare:{self.n}:stop"})
        b = self.post("/api/Order/place", {**self.base, "type": 1, "side": 1, "size": 1, "limitPrice": 6054.0,
                                           "customTag": f"bare:{self.n}:target"})
        t2 = clock()
        for oid in (a["orderId"], b["orderId"]):
            self.post("/api/Order/cancel", {"accountId": self.sim.account_id, "orderId": oid})
        self.post("/api/Position/closeContract", self.base)
        return t1 - t0, t2 - t1


def floor(sim: SimProcess, n_flat: int) -> dict:
    bare = BarePost(sim)
    for _ in range(3):
        bare.round_trip()
    flat = [bare.round_trip() for _ in range(n_flat)]
    live = []
    for _ in range(BARS):
        time.sleep(IDLE_S)
        live.append(bare.round_trip())
    assert not working(sim) and not positions(sim), "the floor left orders or a position behind"
    return {"flat": flat, "live": live}


def native_protected(sim: SimProcess) -> bool:
    """Both bracket children of the entry working at the broker, and nothing else."""
    w = working(sim)
    return len(w) == 2 and sorted((o.get("customTag") or "")[-3:] for o in w) == ["-SL", "-TP"]


def gateway_runs(gw: Gw, sim: SimProcess, n: int, idle_s: float, start: int, native: bool = False) -> list[float]:
    rtt = []
    ready = native_protected if native else protected
    for i in range(start, start + n):
        if idle_s:
            time.sleep(idle_s)
        t0 = time.perf_counter()
        rep = gw.enter(f"LE{9000 + i}", direction=1 if i % 2 == 0 else -1)
        rtt.append((time.perf_counter() - t0) * 1e9)
        assert rep.status == "accepted", rep
        wait_for(lambda: ready(sim), 10, 0.005, "bracket")
        gw.cmd(f"XL{9000 + i}", "exit", contract=sim.contract_id)
        wait_for(lambda: not working(sim), 10, 0.005, "flat")
    return rtt


def samples(gw: Gw) -> list[dict]:
    return gw.client.request(OrderCommand(f"op-status-{time.time_ns()}", "status", reason="bench")).msg.detail[
        "latency_samples"]


def summarise(rtt: list[float], got: list[dict], bare: list[tuple[int, int]], live: bool) -> dict:
    entries = [s for s in got if s.get("leg") == "entry"]
    ack = stats([s["ack_ns"] - s["recv_ns"] for s in entries], 1e6)
    prot = stats([s["protected_ns"] for s in got if s.get("leg") == "protect"], 1e6)
    bare_ack, bare_prot = stats([a for a, _ in bare], 1e6), stats([b for _, b in bare], 1e6)
    return {"cadence": cadence(live), "unit": "ms", "round_trips": len(rtt),
            "cmd_to_rest_sent": stats([s["sent_ns"] - s["recv_ns"] for s in entries], 1e6),
            "cmd_to_sim_ack": ack, "floor_bare_post_order_place": bare_ack, "cmd_to_sim_ack_ratio_to_floor": ratio(
                ack, bare_ack),
            "entry_fill_to_protected": prot, "floor_two_bare_posts_in_series": bare_prot,
            "entry_fill_to_protected_ratio_to_floor": ratio(prot, bare_prot),
            "engine_req_to_reply": stats(rtt, 1e6)}


def run_mode(tmp: Path, n: int, native: bool) -> dict:
    """One simulator, its floor first, then one gateway: n round trips flat, BARS at the live cadence."""
    with SimProcess(tmp / "sim", speed=1.0, rate_limit_per_min=100000, auto_oco_brackets=native) as sim:
        price(sim, "6050.00")
        bare = floor(sim, n)
        gw = Gw(tmp, sim, api={"rate_limit_per_min": 100000}, risk={"max_daily_loss": 100000},
                orders={"poll_s": 2.0, "idle_poll_s": 5.0,              # the defaults: reconciliation on
                        "native_brackets": "auto" if native else "off"})
        gw.start()
        try:
            rtt_flat = gateway_runs(gw, sim, n, 0.0, 0, native)
            got_flat = samples(gw)
            rtt_live = gateway_runs(gw, sim, BARS, IDLE_S, n, native)
            got_all = samples(gw)
            time.sleep(1.2)                                   # the next heartbeat carries the last counts
            hbs = [h for h in gw.of(Heartbeat) if h.service == "orders"]
            stats_end = hbs[-1].stats if hbs else {}
            legs = [o for o in sim.state()["orders"] if ":stop:" in (o.get("customTag") or "")
                    or ":target:" in (o.get("customTag") or "")]
        finally:
            gw.stop()
    out = {"flat": summarise(rtt_flat, got_flat, bare["flat"], live=False),
           "live": summarise(rtt_live, got_all[len(got_flat):], bare["live"], live=True),
           "reconciliation": {"poll_s": 2.0, "idle_poll_s": 5.0, "gateway_stats_at_end": {
               k: v for k, v in stats_end.items() if "reconcile" in k or "poll" in k}},
           "protection_rest_calls": {"gateway_protect_calls": stats_end.get("protect_calls", 0),
                                     "client_side_legs_at_the_broker": len(legs), "entries": n + BARS}}
    if native:
        assert out["protection_rest_calls"]["gateway_protect_calls"] == 0 and not legs, out["protection_rest_calls"]
    return out


def main(n: int = 20) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench-orders-"))
    result = {"bench": "orders", "machine": machine()}
    result.update(run_mode(tmp / "client", n, native=False))     # client-side: at the top level, as before
    result["native"] = run_mode(tmp / "native", n, native=True)
    result["goal_ms"] = {"entry_fill_to_protected_p99_live": 5, "cmd_to_sim_ack_ratio_to_floor": 1.2}
    result["budget"] = {"placement_ms": 500, "aim_ms": 5}
    write("orders", result)
    return result


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
