"""Shared helpers for the engine unit tests: a config, an engine on an EventClock, a fake gateway."""
from __future__ import annotations

from datetime import datetime

from common.clock import NY, EventClock, from_dt
from common.config import Config
from common.messages import Account, Heartbeat, OrderReply, Position, Prediction, Quote
from services.engine.config import EngineConfig
from services.engine.engine import Engine

NS = 1_000_000_000
CONTRACT = "CON.F.US.MES.H26"
SERVICES = ("feed", "inference", "orders", "positions")


def ny(y, mo, d, h, mi, s=0) -> int:
    return from_dt(datetime(y, mo, d, h, mi, s, tzinfo=NY))


def make_cfg(**sections) -> Config:
    raw = {"trading": {"contract": CONTRACT, "clock": "event"}}
    for k, v in sections.items():
        raw.setdefault(k, {}).update(v)
    return Config.model_validate(raw)


class FakeGateway:
    """Answers like the order gateway: accepted, first answer for a repeated key."""

    def __init__(self):
        self.commands = []
        self.replies: dict[str, OrderReply] = {}
        self.status = "accepted"
        self.down = False

    def __call__(self, cmd, hops, on_sent=None):
        self.commands.append(cmd)
        if self.down:
            return None
        if on_sent is not None:          # the request is on the wire, the gateway works on it
            on_sent()
        if cmd.key in self.replies:
            return self.replies[cmd.key]
        ok = self.status in ("accepted",)
        r = OrderReply(cmd.key, ok, self.status, "", {"order_id": len(self.commands)})
        self.replies[cmd.key] = r
        return r

    def actions(self):
        return [(c.action, c.direction) for c in self.commands]


class Kit:
    def __init__(self, start_ns: int, synced: bool = True, **sections):
        self.cfg = make_cfg(**sections)
        self.clock = EventClock(start_ns)
        self.gw = FakeGateway()
        self.published = []
        self.eng = Engine(self.cfg, self.cfg.section("engine", EngineConfig), self.clock, self.gw,
                          lambda m, key=None: self.published.append(m))
        self.price = 24200
        self.beat()
        if synced:
            self.eng.sync_status({"in_flight": [], "position": None, "halted": False})
        self.eng.on_account(Account(1, 100_000, "2026-03-09"))
        self.eng.on_position(Position(CONTRACT, 0, 0, "0"))
        self.eng.tick()

    def beat(self, services=SERVICES):
        for s in services:
            self.eng.on_heartbeat(Heartbeat(s, "ok", 1, 1.0))

    def quote(self, bid=None, ask=None, last=None):
        bid = self.price if bid is None else bid
        ask = bid + 1 if ask is None else ask
        self.eng.on_quote(Quote(CONTRACT, bid, ask, last if last is not None else bid, self.clock.now_ns(), 0))

    def advance(self, seconds: float, beat=True, quote=True, step=1.0):
        """Move the event clock with heartbeats and quotes every `step` seconds, ticking the engine."""
        left = seconds
        while left > 0:
            d = min(step, left)
            self.clock.advance(self.clock.now_ns() + int(d * NS))
            left -= d
            if beat:
                self.beat()
            if quote:
                self.quote()
            self.eng.tick()

    def predict(self, direction, conf, atr=4.0, spread=1, age_s=0.0, **kw):
        bar_start = self.clock.now_ns() - NS - int(age_s * NS)
        bar_start -= bar_start % NS
        p = Prediction(CONTRACT, bar_start, direction, conf, [0.1, 0.1, 0.8], "v1", self.price, atr, spread,
                       kw.pop("feature_us", 100.0), kw.pop("inference_us", 200.0), **kw)
        self.eng.on_prediction(p)
        return p

    def position(self, direction, size=1, entry_ns=None, unrealized=0, stop_order_id=11):
        self.eng.on_position(Position(CONTRACT, direction, size if direction else 0, "6050.00",
                                      entry_ns if entry_ns is not None else self.clock.now_ns(),
                                      stop_order_id=stop_order_id if direction else None,
                                      unrealized_cents=unrealized))

    def kinds(self, cls):
        return [m for m in self.published if isinstance(m, cls)]
