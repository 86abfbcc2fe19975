"""Shared pieces of the order gateway integration tests: a real simulator, a real gateway
process, a LazyPirateClient on orders_cmd and a Subscriber on orders_pub. No fakes."""
from __future__ import annotations

import time

import pytest

from common.bus import LazyPirateClient, Subscriber
from common.config import load_config
from common.messages import Fill, Heartbeat, OrderCommand, OrderEvent, RiskEvent
from tests.harness.config import write_config
from tests.harness.procs import ServiceProcess, wait_for
from tests.harness.sim import SimProcess

# native_brackets off: these tests exercise the client-side bracket and their faults must not be
# spent on the first entry's native-bracket attempt (test_orders_native_brackets.py covers that)
FAST = {"poll_s": 0.5, "idle_poll_s": 1.0, "lookup_timeout_s": 3.0, "flat_verify_s": 3.0,
        "hub_max_backoff_s": 0.5, "native_brackets": "off"}


class Gw:
    def __init__(self, tmp_path, sim, orders: dict | None = None, **sections):
        self.sim = sim
        self.cfg_path = write_config(tmp_path, sim, orders={**FAST, **(orders or {})}, **sections)
        self.cfg = load_config(self.cfg_path)
        self.proc = ServiceProcess("orders", self.cfg_path)
        self.client: LazyPirateClient | None = None
        self.sub: Subscriber | None = None
        self.envs: list = []
        self.n = 0
        self.epoch = None

    def start(self, wait_ready: bool = True) -> "Gw":
        self.proc.start()
        if self.sub is None:
            self.sub = Subscriber("test", self.cfg.bus.orders_pub, self.cfg.bus.orders_snap)
        self.client = LazyPirateClient("test", self.cfg.bus.orders_cmd, timeout_ms=3000, retries=3)
        if wait_ready:
            wait_for(lambda: self.status().get("entries_ok"), 20, 0.2, "gateway ready (hub up and reconciled)")
            # join now (live RiskEvents are not retained) and wait until the subscriber has this
            # gateway's snapshot (new epoch): the gateway announces itself a second after start
            old = self.epoch
            wait_for(lambda: self.of(object) is not None and self.sub.epoch not in (None, old), 10,
                     what="snapshot of the (re)started gateway")
            self.epoch = self.sub.epoch
            # and until the SUB socket itself is connected (a live heartbeat, not the snapshot):
            # a message published before that would be lost to this slow joiner
            n = len(self.envs)
            wait_for(lambda: any(isinstance(e.msg, Heartbeat) and not e.snapshot and e.epoch == self.epoch
                                 for e in (self.of(object) and self.envs[n:])), 10, what="live heartbeat")
        return self

    def cmd(self, key: str, action: str, wait: bool = True, timeout: float = 60.0, **kw):
        """Send a command. The gateway answers at once: the outcome, or `accepted` with
        detail.pending when the broker has not answered yet. With `wait`, follow a pending
        answer as the engine may: resend the same key (idempotent) until the outcome is known."""
        cmd = OrderCommand(key, action, **kw)
        rep = self.client.request(cmd).msg
        end = time.monotonic() + timeout
        while wait and rep.detail.get("pending") and time.monotonic() < end:
            time.sleep(0.1)
            rep = self.client.request(cmd).msg
        return rep

    def status(self) -> dict:
        self.n += 1
        try:
            return self.client.request(OrderCommand(f"op-status-{time.time_ns()}", "status"),
                                       timeout_ms=1000, retries=0).msg.detail
        except Exception:
            self.client.close()
            return {}

    def enter(self, key: str, direction: int = 1, size: int = 1, stop: int = 8, target: int = 16, **kw):
        return self.cmd(key, "enter", contract=self.sim.contract_id, direction=direction, size=size,
                        stop_ticks=stop, target_ticks=target, signal_id=key, model_version="m1", **kw)

    def of(self, cls) -> list:
        self.envs.extend(self.sub.drain())
        return [e.msg for e in self.envs if isinstance(e.msg, cls)]

    def fills(self) -> list[Fill]:
        seen, out = set(), []
        for f in self.of(Fill):
            if f.trade_id not in seen:
                seen.add(f.trade_id)
                out.append(f)
        return out

    def events(self) -> list[OrderEvent]:
        return self.of(OrderEvent)

    def risks(self) -> list[RiskEvent]:
        return self.of(RiskEvent)

    def stop(self) -> None:
        if self.client:
            self.client.close()
        self.proc.terminate(30)
        if self.sub:
            self.sub.close()


def working(sim) -> list[dict]:
    return sim.state()["working"]


def positions(sim) -> list[dict]:
    return sim.state()["positions"]


def by_leg(orders: list[dict], leg: str) -> list[dict]:
    return [o for o in orders if (o.get("customTag") or "").split(":")[-2:-1] == [leg]]


def protected(sim, size: int = 1) -> bool:
    w = [o for o in working(sim) if not by_leg([o], "entry")]
    return len(by_leg(w, "stop")) == 1 and len(by_leg(w, "target")) == 1 and \
        all(o["size"] == size for o in w) and len(w) == 2


def closes(sim) -> list[dict]:
    """The broker's closeContract orders: market orders with no customTag (the gateway's exits,
    flattens and overfill closes go out this way: reduce-only at the broker)."""
    return [o for o in sim.state()["orders"] if not o.get("customTag") and o["type"] == 2]


def price(sim, ticks_price) -> None:
    p = float(ticks_price)
    sim.control("price", bid=p, ask=p + 0.25, last=p)


__all__ = ["Gw", "closes", "working", "positions", "by_leg", "protected", "price", "wait_for"]


# the default fixtures of the gateway tests (import them: `from ...orders_helpers import gw, sim`)
@pytest.fixture
def sim(tmp_path):
    with SimProcess(tmp_path / "sim", speed=1.0) as s:
        yield s


@pytest.fixture
def gw(tmp_path, sim):
    g = Gw(tmp_path, sim).start()
    yield g
    g.stop()
