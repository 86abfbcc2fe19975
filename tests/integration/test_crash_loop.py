"""Crash-loop drills under a real supervisord with the supervision listener.

- The order gateway killed right after every start: the listener stops it at the configured
  count, a crash_loop RiskEvent reaches the bus and, through the alerts service, a local
  webhook receiver; the engine's entries halt (breaker), and `scalper status` shows the count.
  Started again by the operator, the breaker clears.
- The gateway dying once while a position is open: a service_down RiskEvent at once, cleared
  when supervisord has it running again.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from common.bus import LazyPirateClient, ServiceUnavailable, Subscriber
from common.config import load_config
from common.messages import Heartbeat, OperatorCommand, OrderCommand, Query, RiskEvent
from tests.harness.config import write_config
from tests.harness.pipeline import Pipeline
from tests.harness.procs import ROOT, wait_for
from tests.harness.receivers import HttpReceiver
from tests.harness.sim import SimProcess
from tests.integration.orders_helpers import FAST, price, protected

# whole-pipeline drills: slow (make slow, CI runs them after the default suite)
pytestmark = [pytest.mark.integration, pytest.mark.slow]

MAX_EXITS = 3
# as supervisord.conf runs the gateway: exit 3 (bad state file) is final, anything else restarts
GATEWAY = {"startsecs": "0", "autorestart": "unexpected", "exitcodes": "3"}


@pytest.fixture
def sim(tmp_path):
    with SimProcess(tmp_path / "sim", speed=1.0) as s:
        yield s


def config(tmp_path, sim, **extra):
    return write_config(tmp_path, sim, orders=FAST, supervision={"max_exits": MAX_EXITS, "window_min": 5}, **extra)


def ask(endpoint: str, msg, timeout_ms: int = 2000):
    client = LazyPirateClient("test", endpoint, timeout_ms=timeout_ms, retries=0)
    try:
        return client.request(msg).msg
    except ServiceUnavailable:
        return None
    finally:
        client.close()


def risk_events(sub: Subscriber, seen: list) -> list[RiskEvent]:
    seen.extend(e.msg for e in sub.drain() if isinstance(e.msg, (RiskEvent, Heartbeat)))
    return [m for m in seen if isinstance(m, RiskEvent)]


def listener_up(sub: Subscriber, seen: list) -> None:
    """supervisord starts the listener first but does not wait for it; on a loaded machine its
    first events come late (buffered, not lost). The drill starts once it is watching."""
    risk_events(sub, seen)
    wait_for(lambda: risk_events(sub, seen) is not None and any(isinstance(m, Heartbeat) for m in seen), 60,
             what="the supervision listener's heartbeat")


def engine_breakers(cfg) -> list[str]:
    # with the gateway down the engine's loop spends most of its time in 2.5 s gateway status
    # requests (a known gap, reported): give its answer that long and more
    rep = ask(cfg.bus.engine_cmd, OperatorCommand("status"), timeout_ms=8000)
    return rep.data.get("breakers", []) if rep is not None and rep.ok else []


def test_gateway_killed_after_every_start_is_stopped_alerted_and_halts_entries(tmp_path, sim):
    hook = HttpReceiver()           # the server is bound here; `with hook` starts serving
    cfg_path = config(tmp_path, sim, alerts={
        "metrics_port": None, "supervisor_socket": str(tmp_path / "sv" / "supervisor.sock"),
        "webhook": {"url": f"{hook.url}/hook", "min_severity": "WARNING",
                    "rate_limit": {"burst": 100, "per_minute": 600}}})
    cfg = load_config(cfg_path)
    sub = Subscriber("test", cfg.bus.supervision_pub, cfg.bus.supervision_snap, topics=[RiskEvent, Heartbeat])
    seen: list[RiskEvent] = []
    with hook, Pipeline(tmp_path, cfg_path, services=("alerts", "orders", "engine"), listener=True,
                        programs={"orders": GATEWAY}) as pipe:
        listener_up(sub, seen)
        kills, last = 0, 0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and pipe.state("orders") != "STOPPED":
            info = pipe.info("orders")
            if info["statename"] == "RUNNING" and info["pid"] not in (0, last):
                last = info["pid"]
                time.sleep(0.5)                        # just after the start, as in the issue
                now = pipe.info("orders")
                if now["statename"] == "RUNNING" and now["pid"] == last:   # not being stopped meanwhile
                    os.kill(last, signal.SIGKILL)
                    kills += 1
            time.sleep(0.05)
        assert pipe.state("orders") == "STOPPED", f"{pipe.states()}\n{pipe.tails()}"
        assert kills == MAX_EXITS, kills
        time.sleep(3)
        assert pipe.state("orders") == "STOPPED", "supervisord restarted it after the listener stopped it"

        wait_for(lambda: any(e.kind == "crash_loop" and e.active for e in risk_events(sub, seen)), 30,
                 what=f"the crash_loop event on the bus: {seen}\n{pipe.tails()}")
        ev = next(e for e in risk_events(sub, seen) if e.kind == "crash_loop")
        assert ev.severity == "ERROR" and f"orders exited {MAX_EXITS} times" in ev.detail, ev.detail
        assert "start orders" in ev.detail
        wait_for(lambda: "crash_loop" in engine_breakers(cfg), 45,
                 what=f"the engine's crash_loop breaker\n{pipe.tails()}")
        [alert] = hook.wait(lambda r: r.body.get("kind") == "crash_loop", timeout=90,
                            what=f"the crash-loop alert at the webhook\n{pipe.output('alerts')[-3000:]}")[:1]
        assert "orders exited" in str(alert.body), alert.body

        out = subprocess.run([sys.executable, "-m", "services.cli", "--config", str(cfg_path), "status"],
                             cwd=ROOT, capture_output=True, text=True, timeout=60).stdout
        assert f"orders {MAX_EXITS} exits" in out and "STOPPED for a crash loop" in out, out

        pipe.rpc.startProcess("orders", True)        # the operator fixed the cause
        wait_for(lambda: any(e.kind == "crash_loop" and not e.active for e in risk_events(sub, seen)), 60,
                 what=f"crash_loop cleared on the bus\n{pipe.tails()}")
        wait_for(lambda: "crash_loop" not in engine_breakers(cfg), 45,
                 what=f"the engine's breaker cleared\n{pipe.tails()}")
    sub.close()


def test_gateway_down_with_a_position_open_alerts_at_once(tmp_path, sim):
    cfg_path = config(tmp_path, sim)
    cfg = load_config(cfg_path)
    sub = Subscriber("test", cfg.bus.supervision_pub, cfg.bus.supervision_snap, topics=[RiskEvent, Heartbeat])
    seen: list[RiskEvent] = []
    with Pipeline(tmp_path, cfg_path, services=("positions", "orders"), listener=True,
                  programs={"orders": GATEWAY}) as pipe:
        listener_up(sub, seen)
        wait_for(lambda: getattr(ask(cfg.bus.orders_cmd, OrderCommand(f"s{time.time_ns()}", "status")),
                                 "detail", {}).get("entries_ok"), 30, what="gateway ready")
        price(sim, "6050.00")
        rep = ask(cfg.bus.orders_cmd, OrderCommand("LE9001", "enter", sim.contract_id, 1, 1, 8, 16, "LE9001", "m1"),
                  timeout_ms=10000)
        assert rep is not None and rep.status == "accepted", rep
        wait_for(lambda: protected(sim), 15, what="position with stop and target")
        wait_for(lambda: (getattr(ask(cfg.bus.positions_query, Query("status")), "data", {}).get("position")
                          or {}).get("size") == 1, 30, what="the keeper reporting the position")
        time.sleep(1.5)                   # the listener has drained the keeper's Position by now
        old = pipe.pid("orders")
        os.kill(old, signal.SIGKILL)
        wait_for(lambda: any(e.kind == "service_down" and e.active for e in risk_events(sub, seen)), 20,
                 what=f"service_down on the bus: {seen}\n{pipe.tails()}")
        # at the first exit: no crash loop was needed for it
        assert not any(e.kind == "crash_loop" for e in risk_events(sub, seen))
        ev = next(e for e in risk_events(sub, seen) if e.kind == "service_down")
        assert "orders went down while LONG 1" in ev.detail and ev.severity == "ERROR", ev.detail
        wait_for(lambda: pipe.state("orders") == "RUNNING" and pipe.pid("orders") != old, 30, what="restart")
        wait_for(lambda: any(e.kind == "service_down" and not e.active for e in risk_events(sub, seen)), 30,
                 what="service_down cleared")
        assert pipe.state("orders") == "RUNNING"       # one exit is no crash loop
    sub.close()


def test_a_program_dying_before_startsecs_is_stopped_not_left_in_backoff(tmp_path, sim):
    """Before: supervisord retried 100 times with a growing delay (about 84 minutes) before
    FATAL, silently. A program that exits at once is BACKOFF each time; the listener counts
    those too."""
    cfg_path = config(tmp_path, sim)
    cfg = load_config(cfg_path)
    sub = Subscriber("test", cfg.bus.supervision_pub, cfg.bus.supervision_snap, topics=[RiskEvent, Heartbeat])
    seen: list = []
    pipe = Pipeline(tmp_path, cfg_path, services=("inference",), listener=True,
                    programs={"inference": {"command": f"{sys.executable} -c 'import sys; sys.exit(1)'",
                                            "startsecs": "2", "autorestart": "true"}})
    pipe.watched = ("supervision",)         # the program never gets to RUNNING
    with pipe:
        listener_up(sub, seen)
        wait_for(lambda: pipe.state("inference") == "STOPPED", 60, what=f"inference stopped: {pipe.states()}")
        wait_for(lambda: any(e.kind == "crash_loop" and e.active and "inference exited" in e.detail
                             for e in risk_events(sub, seen)), 10, what=f"crash_loop event: {seen}")
        time.sleep(3)
        assert pipe.state("inference") == "STOPPED"
    sub.close()
