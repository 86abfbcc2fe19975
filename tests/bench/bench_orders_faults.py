"""Order gateway under a slow or frozen broker -> logs/bench/orders_faults.json

Real simulator + real gateway process on loopback, reconciliation polls on (the defaults), the
simulator's own fault injection:
  - entry fill event received -> stop acknowledged by the broker, with REST answering at once
    and with 2.5 s added to every REST call (measured inside the gateway, perf_counter; read
    back through the status command);
  - a command's answer time (REQ send -> reply, outside the gateway) while every REST call is
    held 20 s (a broker freeze): status, halt, resume, enter and flatten, back to back.
The figures are only meaningful next to the machine's load; say so when quoting them.

    .venv/bin/python -m tests.bench.bench_orders_faults [N]
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from common.messages import OrderCommand
from tests.bench._kit import machine, stats, write
from tests.harness.procs import wait_for
from tests.harness.sim import SimProcess
from tests.integration.orders_helpers import Gw, positions, price, protected, working


def pct(values_ms: list[float]) -> dict:
    """median / p99 / max of values already in ms."""
    return stats(values_ms, 1.0)


def samples(gw: Gw) -> list[dict]:
    return gw.client.request(OrderCommand(f"op-status-{time.time_ns()}", "status", reason="bench")).msg.detail[
        "latency_samples"]


def round_trips(gw: Gw, sim, n: int, tag: str, timeout: float) -> list[float]:
    before = len([s for s in samples(gw) if s.get("leg") == "stop_ack"])
    for i in range(n):
        rep = gw.enter(f"LE{tag}{i}", direction=1 if i % 2 == 0 else -1)
        assert rep.status == "accepted", rep
        wait_for(lambda: protected(sim), timeout, 0.01, "bracket")
        gw.cmd(f"XL{tag}{i}", "exit", contract=sim.contract_id)
        wait_for(lambda: not working(sim) and not positions(sim), timeout, 0.01, "flat")
    got = [s for s in samples(gw) if s.get("leg") == "stop_ack"][before:]
    return [s["fill_to_stop_ack_ns"] / 1e6 for s in got]


def main(n: int = 10, freeze_s: float = 20.0) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench-orders-faults-"))
    with SimProcess(tmp / "sim", speed=1.0, rate_limit_per_min=100000) as sim:
        gw = Gw(tmp, sim, api={"rate_limit_per_min": 100000}, risk={"max_daily_loss": 100000},
                orders={"poll_s": 2.0, "idle_poll_s": 5.0, "flat_verify_s": 15.0})   # polls on: the defaults
        gw.start()
        try:
            price(sim, "6050.00")
            fast = round_trips(gw, sim, n, "F", 10)
            sim.control("delay", ms=2500, count=-1)
            slow = round_trips(gw, sim, max(3, n // 3), "S", 60)
            sim.control("clear")
            # a broker freeze: every REST call answered 20 s late; the operator keeps asking
            sim.control("timeout", seconds=freeze_s, count=-1)
            answers: dict[str, list[float]] = {}
            end = time.monotonic() + freeze_s
            i = 0
            while time.monotonic() < end:
                for action, kw in (("status", {}), ("halt", {"reason": "bench"}), ("resume", {}),
                                   ("enter", {"direction": 1, "size": 1, "stop_ticks": 8, "target_ticks": 16}),
                                   ("flatten", {"reason": "bench"})):
                    t0 = time.perf_counter()
                    rep = gw.client.request(OrderCommand(f"op-{action}-{i}", action, contract=sim.contract_id, **kw),
                                            timeout_ms=2000, retries=0).msg
                    answers.setdefault(action, []).append((time.perf_counter() - t0) * 1000)
                    assert rep is not None
                i += 1
                time.sleep(0.2)
            sim.control("clear")
        finally:
            gw.stop()
    out = {
        "bench": "orders_faults", "machine": machine(), "unit": "ms",
        "note": "real simulator and gateway processes; quote next to the machine's load",
        "fill_to_stop_ack_ms": {"rest_delay_0ms": pct(fast), "rest_delay_2500ms": pct(slow)},
        "command_answer_ms_during_broker_freeze": {"freeze_s": freeze_s,
                                                   "all": pct([x for v in answers.values() for x in v]),
                                                   **{k: pct(v) for k, v in answers.items()}},
        "budget": {"command_answer_ms": 250},
    }
    write("orders_faults", out)
    return out


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
