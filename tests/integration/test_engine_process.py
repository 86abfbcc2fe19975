"""The engine as a real process: scripted upstream streams on real Publishers, a fake order
gateway on a real ReplyServer, operator commands over REQ, kill -9 and restart."""
from __future__ import annotations

import subprocess
import sys
import threading
import time
from datetime import datetime

import pytest
import zmq

from common.bus import LazyPirateClient, Publisher, ReplyServer, Subscriber
from common.clock import NY, from_dt
from common.config import load_config
from common.messages import (
    Account, Heartbeat, OperatorCommand, OrderCommand, OrderReply, Position, Prediction, Quote, Reply, Signal,
)
from tests.harness.config import write_config
from tests.harness.procs import ROOT, ServiceProcess, wait_for

pytestmark = pytest.mark.integration
C = "CON.F.US.MES.H26"
NS = 1_000_000_000


def ny(h, mi, s=0) -> int:
    return from_dt(datetime(2026, 3, 9, h, mi, s, tzinfo=NY))


class Upstream:
    """Feed, inference, positions and orders publishers plus a fake gateway, served on one thread."""

    def __init__(self, cfg, t0: int):
        b = cfg.bus
        self.lock = threading.RLock()
        self.feed = Publisher("feed", b.feed_pub, b.feed_snap)
        self.inference = Publisher("inference", b.inference_pub, b.inference_snap)
        self.positions = Publisher("positions", b.positions_pub, b.positions_snap)
        self.orders = Publisher("orders", b.orders_pub, b.orders_snap)
        self.gw = ReplyServer("orders", b.orders_cmd, self.on_command)
        self.commands: list[OrderCommand] = []
        self.first: dict[str, OrderReply] = {}
        self.in_flight: list[str] = []
        self.position = None
        self.t = t0
        self.price = 24201
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    # -- the fake order gateway ------------------------------------------------
    def on_command(self, env):
        cmd = env.msg
        assert isinstance(cmd, OrderCommand)
        self.commands.append(cmd)
        if cmd.action == "status":
            return OrderReply(cmd.key, True, "ok", "", {
                "halted": False, "halt_reason": "", "working_orders": [], "position": self.position,
                "in_flight": list(self.in_flight), "hub": "connected", "day_pnl_cents": 0})
        if cmd.key in self.first:
            return self.first[cmd.key]
        if cmd.action in ("enter", "reverse"):
            self.in_flight.append(cmd.key)
        r = OrderReply(cmd.key, True, "accepted", "", {"order_id": len(self.commands)})
        self.first[cmd.key] = r
        return r

    def _serve(self):
        poller = zmq.Poller()
        socks = {p.snap: p.serve_snapshot for p in (self.feed, self.inference, self.positions, self.orders)}
        socks[self.gw.sock] = self.gw.serve_one
        for s in socks:
            poller.register(s, zmq.POLLIN)
        while self.running:
            for s, _ in poller.poll(20):
                with self.lock:
                    socks[s]()

    def close(self):
        self.running = False
        self.thread.join(2)
        for p in (self.feed, self.inference, self.positions, self.orders, self.gw):
            p.close()

    # -- scripted streams ----------------------------------------------------
    def step(self, seconds: float = 1.0, n: int = 1):
        for _ in range(n):
            with self.lock:
                self.t += int(seconds * NS)
                self.feed.publish(Quote(C, self.price, self.price + 1, self.price, self.t, self.t))
                self.feed.publish(Heartbeat("feed", "ok", 1, 1.0, self.t))
                for p in (self.inference, self.positions, self.orders):
                    p.publish(Heartbeat(p.service, "ok", 1, 1.0, self.t))
            time.sleep(0.03)

    def predict(self, direction: int, conf: float, atr: float = 4.0) -> Prediction:
        bar = self.t - NS
        p = Prediction(C, bar, direction, conf, [0.1, 0.1, 0.8], "m-7", self.price, atr, 1, 120.0, 300.0)
        with self.lock:
            self.inference.publish(p, key=C)
        return p

    def set_position(self, direction: int, size: int = 1):
        with self.lock:
            self.positions.publish(Position(C, direction, size, "6050.25", self.t if direction else 0,
                                            stop_order_id=5 if direction else None), key=C)
            self.position = {"contract": C, "direction": direction, "size": size} if direction else None
            self.in_flight.clear()

    def account(self, balance=100_000):
        with self.lock:
            self.positions.publish(Account(1, balance, "2026-03-09"), key="account")

    def trading(self):
        return [c for c in self.commands if c.action != "status"]

    def wait_command(self, n: int, what: str, timeout: float = 10.0) -> OrderCommand:
        def got():
            if len(self.trading()) >= n:
                return self.trading()[n - 1]
            self.step(0.0)           # keep heartbeats flowing without moving the clock
            return None
        return wait_for(got, timeout, 0.02, what)


@pytest.fixture
def rig(tmp_path):
    cfg_path = write_config(tmp_path, None, trading={"contract": C, "clock": "event"},
                            bus={"request_timeout_ms": 1000, "request_retries": 1},
                            engine={"tick_s": 0.05, "heartbeat_s": 0.2, "status_retry_s": 0.2})
    cfg = load_config(cfg_path)
    up = Upstream(cfg, ny(10, 0))
    up.account()
    up.set_position(0)
    procs: list[ServiceProcess] = []

    def start() -> ServiceProcess:
        p = ServiceProcess("engine", cfg_path).start()
        procs.append(p)
        n = len([c for c in up.commands if c.action == "status"])
        wait_for(lambda: (up.step(1.0) or True) and len([c for c in up.commands if c.action == "status"]) > n,
                 20, 0.05, "the engine to read the gateway's status")
        up.step(1.0, 5)            # every subscriber has drained (snapshots taken) before anything matters
        assert p.alive(), p.tail()
        return p

    yield cfg, up, start
    for p in procs:
        p.terminate(5)
    up.close()


def operator(cfg, action: str, reason: str = "") -> Reply:
    c = LazyPirateClient("test-op", cfg.bus.engine_cmd, timeout_ms=3000, retries=0)
    try:
        return c.request(OperatorCommand(action, reason)).msg
    finally:
        c.close()


def test_engine_opens_reverses_exits_obeys_halt_and_flattens(rig, tmp_path):
    cfg, up, start = rig
    eng = start()
    sigs = Subscriber("test", cfg.bus.engine_pub, cfg.bus.engine_snap, topics=[Signal])
    sigs.drain()                                               # snapshot now; every later signal arrives live
    up.predict(1, 0.2)                                         # under min_confidence: nothing
    up.step(1.0, 2)

    p = up.predict(1, 0.78)
    enter = up.wait_command(1, "LONG_ENTRY -> enter")
    assert (enter.action, enter.direction, enter.size, enter.stop_ticks, enter.target_ticks) == ("enter", 1, 2, 6, 9)
    assert enter.key == enter.signal_id == f"LE{p.bar_start_ns // NS}" and enter.model_version == "m-7"
    up.step(1.0)
    up.predict(1, 0.95)                                        # in flight: no second entry
    up.step(1.0, 3)
    assert len(up.trading()) == 1

    up.set_position(1, 2)
    up.step(1.0)
    p = up.predict(-1, 0.82)
    rev = up.wait_command(2, "REVERSE_TO_SHORT -> reverse")
    assert (rev.action, rev.direction, rev.size, rev.key) == ("reverse", -1, 2, f"RS{p.bar_start_ns // NS}")

    up.set_position(-1, 2)
    up.step(1.0)
    p = up.predict(1, 0.70)
    ex = up.wait_command(3, "EXIT_SHORT -> exit")
    assert (ex.action, ex.key) == ("exit", f"XS{p.bar_start_ns // NS}")
    up.set_position(0)
    up.step(1.0)

    r = operator(cfg, "halt", "test")
    assert r.ok and r.data["halted"] and "manual_halt" in r.data["breakers"]
    up.predict(1, 0.9)
    up.step(1.0, 3)
    assert len(up.trading()) == 3                              # halted: no entry
    r = operator(cfg, "resume")
    assert r.ok and not r.data["halted"]
    up.step(1.0)
    up.predict(-1, 0.9)
    short = up.wait_command(4, "SHORT_ENTRY after resume")
    assert (short.action, short.direction) == ("enter", -1)
    up.set_position(-1, 2)

    # to the end of the day: 16:25 New York (EDT on 2026-03-09)
    up.t = ny(16, 24, 57)
    up.set_position(-1, 2)                                     # entered just now: no max-holding exit
    up.step(1.0, 2)
    assert all(c.action != "flatten" for c in up.trading())
    up.step(1.0, 2)
    fl = up.wait_command(5, "the end-of-day flatten")
    assert fl.action == "flatten" and fl.key == f"FL{ny(16, 25) // NS}"

    got = []
    for _ in range(10):
        got += [e.msg.kind for e in sigs.drain()]
        time.sleep(0.05)
    assert {"LONG_ENTRY", "REVERSE_TO_SHORT", "EXIT_SHORT", "SHORT_ENTRY", "FLATTEN"} <= set(got), got
    sigs.close()
    assert eng.alive()
    eng.terminate(10)
    out = eng.output()
    assert "SIGNAL: LONG_ENTRY conf=0.78 price=6050.25" in out
    assert "[WARNING] [engine] CONFIG: trading.flatten_time 16:25 is after the broker's flat-by time" in out


def test_kill9_restart_mid_position_sends_no_duplicate_entry(rig):
    cfg, up, start = rig
    eng = start()
    up.predict(1, 0.2)
    up.step(1.0, 2)
    up.predict(1, 0.8)
    first = up.wait_command(1, "the first entry")
    assert first.action == "enter" and up.in_flight == [first.key]

    eng.kill9()                                                # mid-flight: accepted, no position yet
    eng = start()
    for _ in range(4):
        up.predict(1, 0.9)
        up.step(1.0)
    up.predict(-1, 0.9)                                        # would be a short entry if it thought it was flat
    up.step(1.0, 2)
    enters = [c for c in up.trading() if c.action in ("enter", "reverse")]
    assert {c.key for c in enters} == {first.key}, enters
    assert all(c == first for c in enters)                     # a resend is only ever the identical command

    up.set_position(1, 2)                                      # now filled
    up.step(1.0)
    eng.kill9()
    eng = start()
    for _ in range(3):
        up.predict(1, 0.95)
        up.step(1.0)
    enters = [c for c in up.trading() if c.action in ("enter", "reverse")]
    assert {c.key for c in enters} == {first.key}, [c.key for c in enters]
    assert eng.alive(), eng.tail()


def test_bad_config_exits_2_with_one_line(tmp_path):
    path = write_config(tmp_path, None, engine={"tick_s": -1})
    r = subprocess.run([sys.executable, "-m", "services.engine", "--config", str(path)], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "engine.tick_s" in lines[0], r.stderr
