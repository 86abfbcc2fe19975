"""Order gateway benchmark -> logs/bench/orders.json

Real simulator + real gateway process on loopback; N entry/exit round trips. Measured inside the
gateway with perf_counter (samples read back through the status command):
  - command received -> REST request sent (Order/place handed to the HTTP session)
  - command received -> simulator acknowledgement (Order/place answered)
  - entry fill event received -> stop and target both acknowledged ("entry to protected")
and, outside, the engine's view: REQ send -> OrderReply received.
The rate limits of both the simulator and the gateway are raised for the run (latency, not
budget, is measured here; the 200/min budget is exercised by the integration tests).

    .venv/bin/python -m tests.bench.bench_orders [N]
"""
from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from common.messages import OrderCommand
from tests.harness.procs import ROOT, wait_for
from tests.harness.sim import SimProcess
from tests.integration.orders_helpers import Gw, price, protected, working


def pct(xs: list[float]) -> dict:
    s = sorted(xs)
    if not s:
        return {"n": 0}
    return {"median": round(statistics.median(s), 3), "p99": round(s[max(0, int(0.99 * len(s)) - 1)], 3),
            "max": round(s[-1], 3), "n": len(s)}


def main(n: int = 40) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench-orders-"))
    with SimProcess(tmp / "sim", speed=1.0, rate_limit_per_min=100000) as sim:
        gw = Gw(tmp, sim, api={"rate_limit_per_min": 100000}, risk={"max_daily_loss": 100000},
                orders={"idle_poll_s": 30.0, "poll_s": 30.0})
        gw.start()
        try:
            price(sim, "6050.00")
            rtt = []
            for i in range(n):
                t0 = time.perf_counter()
                rep = gw.enter(f"LE{9000 + i}", direction=1 if i % 2 == 0 else -1)
                rtt.append((time.perf_counter() - t0) * 1000)
                assert rep.status == "accepted", rep
                wait_for(lambda: protected(sim), 10, 0.005, "bracket")
                gw.cmd(f"XL{9000 + i}", "exit", contract=sim.contract_id)
                wait_for(lambda: not working(sim), 10, 0.005, "flat")
            samples = gw.client.request(OrderCommand(f"op-status-{time.time_ns()}", "status", reason="bench")).msg.detail[
                "latency_samples"]
        finally:
            gw.stop()
    entries = [s for s in samples if s.get("leg") == "entry"]
    prot = [s["protected_ns"] / 1e6 for s in samples if s.get("leg") == "protect"]
    out = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "round_trips": n,
        "cmd_to_rest_sent_ms": pct([(s["sent_ns"] - s["recv_ns"]) / 1e6 for s in entries]),
        "cmd_to_sim_ack_ms": pct([(s["ack_ns"] - s["recv_ns"]) / 1e6 for s in entries]),
        "entry_fill_to_protected_ms": pct(prot),
        "engine_req_to_reply_ms": pct(rtt),
        "budget": {"placement_ms": 500, "aim_ms": 5},
    }
    path = ROOT / "logs" / "bench" / "orders.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 40)
