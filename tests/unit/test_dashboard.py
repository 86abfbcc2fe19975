"""The dashboard's pure parts: its config rules, the view it builds from bus messages, the
session record it keeps for the report, and its HTTP rules (token, confirmation header)."""
from __future__ import annotations

import asyncio
from datetime import datetime

import pytest
from aiohttp.test_utils import TestClient, TestServer

from common.clock import NY, from_dt
from common.config import Config, ConfigError
from common.messages import (
    Account, Bar, Envelope, Fill, Heartbeat, OrderEvent, Position, Prediction, Quote, RiskEvent, RoundTrip, Signal,
)
from services.dashboard.config import DashboardConfig
from services.dashboard.recorder import Records
from services.dashboard.server import make_app
from services.dashboard.state import DashboardState

MES = "CON.F.US.MES.H26"
T0 = from_dt(datetime(2026, 11, 23, 10, 0, tzinfo=NY))
S = 1_000_000_000


def env(msg, ts=T0, snapshot=False) -> Envelope:
    return Envelope(msg, 1, ts, "test", snapshot=snapshot)


def section(**raw) -> DashboardConfig:
    return Config.model_validate({"dashboard": raw}).section("dashboard", DashboardConfig)


# -- config -----------------------------------------------------------------------

def test_loopback_by_default_and_a_remote_bind_needs_allow_and_a_token():
    assert section().host == "127.0.0.1"
    assert section(host="localhost").host == "localhost"
    assert section(host="::1").host == "::1"
    with pytest.raises(ConfigError, match=r"dashboard.host = 0.0.0.0: not a loopback address.*allow_remote"):
        section(host="0.0.0.0")
    with pytest.raises(ConfigError, match=r"needs dashboard.token of at least 16"):
        section(host="0.0.0.0", allow_remote=True)
    with pytest.raises(ConfigError, match=r"needs dashboard.token") as err:
        section(host="192.168.1.5", allow_remote=True, token="short-secret")
    assert "short-secret" not in str(err.value)              # the token never lands in an error
    ok = section(host="0.0.0.0", allow_remote=True, token="x" * 16)
    assert ok.token.get_secret_value() == "x" * 16 and "xxxx" not in repr(ok)
    with pytest.raises(ConfigError, match=r"dashboard.port = 70000"):
        section(port=70000)


# -- the view ---------------------------------------------------------------------

def hb(service: str, **stats) -> Heartbeat:
    return Heartbeat(service, "ok", 100, 5.0, T0, stats)


def busy_state() -> DashboardState:
    st = DashboardState(MES, 5000, stale_s=3)
    for name in ("feed", "inference", "engine", "orders", "positions"):
        st.apply(env(hb(name)), now=10.0)
    st.apply(env(hb("engine", breakers=["manual_halt"], rules=["entry_blocked:atr_not_warm"])), 10.0)
    st.apply(env(hb("orders", halted=True, hub="connected", rest_free=120,
                    hops_recent=[{"at_ns": T0, "feed": 50.0, "broker_ack": 2000.0, "total": 2050.0}])), 10.0)
    st.apply(env(Quote(MES, 24000, 24001, 24001, T0 + 5 * S, T0)), 10.0)
    for i in range(3):
        st.apply(env(Bar(MES, 1, T0 + i * S, 24000, 24002, 23999, 24001, 5, 3, 2, 4, 24000, 24001)), 10.0)
    st.apply(env(Bar(MES, 1, T0 + 1 * S, 24000, 24002, 23999, 24001, 5, 3, 2, 4, 24000, 24001), snapshot=True), 10.0)
    st.apply(env(Position(MES, 1, 2, "6000.25", T0, 23990, 24015, 11, 12, 24001, -250, "LE1")), 10.0)
    st.apply(env(Account(1, 99_000, "2026-11-23", realized_day_cents=-1200, fees_day_cents=148, trades_today=2)), 10.0)
    st.apply(env(OrderEvent(11, "LE1:stop:1", MES, "stop", 1, 4, 2, 1, stop_ticks=23990)), 10.0)
    st.apply(env(OrderEvent(9, "LE0:stop:1", MES, "stop", 1, 4, 2, 3, stop_ticks=23980)), 10.0)   # cancelled
    st.apply(env(Fill(7, 10, MES, "entry", 0, 2, 24001, 74, None, T0 + 2 * S)), 10.0)
    st.apply(env(Fill(7, 10, MES, "entry", 0, 2, 24001, 74, None, T0 + 2 * S)), 10.0)            # repeated
    st.apply(env(Signal("LE1", "LONG_ENTRY", MES, 0.71, 24001, "v1", "model long")), 10.0)
    st.apply(env(RiskEvent("stale_data", True, detail="no quote")), 10.0)
    st.apply(env(RiskEvent("stale_data", False, detail="fresh")), 10.0)
    st.apply(env(RiskEvent("reject_storm", True)), 10.0)
    st.apply(env(Prediction(MES, T0 + 2 * S, 1, 0.71, [0.1, 0.19, 0.71], "v1", 24001, 6.5, 1, 10.0, 200.0)), 10.0)
    return st


def test_view_shows_position_pnl_limits_orders_and_halts():
    v = busy_state().view(now=11.0)
    assert v["position"] == {"side": "LONG", "direction": 1, "size": 2, "avg_price": "6000.25", "stop": "5997.50",
                             "target": "6003.75", "mark": "6000.25", "unrealized_cents": -250, "entry_ns": T0,
                             "signal_id": "LE1"}
    assert v["pnl"]["realized_cents"] == -1200 and v["pnl"]["unrealized_cents"] == -250
    assert v["pnl"]["day_cents"] == -1450 and v["pnl"]["loss_room_cents"] == 5000 - 1450
    assert [o["order_id"] for o in v["working_orders"]] == [11] and v["working_orders"][0]["stop"] == "5997.50"
    assert "manual_halt" in v["breakers"] and "entry_blocked:atr_not_warm" in v["breakers"]
    assert v["halts"] == ["order gateway halted", "engine: manual halt"]
    assert [r["kind"] for r in v["risk_active"]] == ["reject_storm"]          # stale_data tripped and cleared
    assert [e["kind"] for e in v["risk_events"]] == ["reject_storm", "stale_data", "stale_data"]
    assert {e["ts_ns"] for e in v["risk_events"]} == {T0 + 5 * S}           # market time at arrival (the quote's)
    assert v["chart"]["t0_ns"] == T0 and v["chart"]["bars"] == [[i, 24001, 24002, 23999] for i in range(3)]
    # (the snapshot's repeat of the second bar is not a 4th)
    assert len(v["chart"]["markers"]) == 1 and v["chart"]["stop_ticks"] == 23990
    assert v["hubs"] == {"market": "unknown", "user": "connected"} and v["rest_free"]["orders"] == 120
    assert v["prediction"]["direction"] == 1 and v["prediction"]["confidence"] == 0.71
    assert v["latency"]["recent"][0]["broker_ack"] == 2000.0
    assert v["signals"][0]["kind"] == "LONG_ENTRY"


def test_staleness_is_measured_by_this_process():
    st = busy_state()
    fresh = st.view(now=11.0)
    assert not any(s["stale"] for s in fresh["services"].values()) and not fresh["feed"]["stale"]
    old = st.view(now=14.5)                                                  # 4.5 s after the last message
    assert all(s["stale"] for s in old["services"].values()) and old["feed"]["stale"]
    assert old["services"]["engine"]["age_s"] == 4.5
    empty = DashboardState(MES, 5000).view(now=1.0)
    assert empty["services"]["feed"]["state"] == "silent" and empty["position"]["side"] == "FLAT"


def test_round_trips_once_each_and_a_late_join_asks_the_keeper():
    st = busy_state()
    assert st.missing_trips()                                                # keeper counted 2, we hold 0
    rt = [RoundTrip(MES, 1, 2, "6000.00", "6001.00", T0 + i * S, T0 + (i + 1) * S, 4, 500 - i * 900, 148, "target")
          for i in range(2)]
    st.add_trips(rt)
    st.apply(env(rt[1]), 10.0)                                               # the bus repeats one
    assert not st.missing_trips() and len(st.trips) == 2
    v = st.view(now=11.0)
    assert [t["exit_ns"] for t in v["trades"]] == [T0 + 2 * S, T0 + S]       # newest first
    # ends at the keeper's day P&L (realized -1200 holds fees of the open position too) + unrealized
    assert v["equity"] == [[T0, 0], [T0 + S, 500], [T0 + 2 * S, 100], [T0 + 5 * S, -1200 - 250]]
    assert v["equity"][-1][1] == v["pnl"]["day_cents"]
    st.apply(env(Account(1, 99_000, "2026-11-24")), 10.0)                   # the next trading day
    assert st.trips == [] and not st.view(now=11.0)["chart"]["markers"]


# -- the session record -------------------------------------------------------------

def test_records_keep_minute_bars_directional_predictions_signals_and_new_hop_chains():
    rec = Records(MES)
    assert rec(env(Bar(MES, 1, T0, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1))) == []
    [(day, bar)] = rec(env(Bar(MES, 60, T0, 24000, 24004, 23998, 24002, 9, 5, 4, 7, 24001, 24002)))
    assert day == "2026-11-23" and bar == {"t": "bar", "ns": T0, "o": 24000, "h": 24004, "l": 23998, "c": 24002}
    assert rec(env(Bar(MES, 60, T0, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1), snapshot=True)) == []
    flat = Prediction(MES, T0, 0, 0.5, [0.25, 0.5, 0.25], "v1", 1, 1.0, 1, 1.0, 1.0)
    assert rec(env(flat)) == []
    [(_, p)] = rec(env(Prediction(MES, T0, -1, 0.66, [0.66, 0.2, 0.14], "v1", 1, 1.0, 1, 1.0, 1.0)))
    assert p == {"t": "pred", "ns": T0, "dir": -1, "conf": 0.66}
    [(_, s)] = rec(env(Signal("SE1795", "SHORT_ENTRY", MES, 0.66, 1, "v1")))
    assert s["kind"] == "SHORT_ENTRY" and s["id"] == "SE1795"
    beat = hb("orders", hops_recent=[{"at_ns": 5, "feed": 1.0}, {"at_ns": 6, "feed": 2.0}])
    assert [r["ns"] for _, r in rec(env(beat))] == [5, 6]
    assert rec(env(beat)) == []                                              # each chain once


# -- HTTP -----------------------------------------------------------------------------

def run_client(app, fn):
    async def go():
        async with TestClient(TestServer(app)) as client:
            return await fn(client)
    return asyncio.run(go())


def test_commands_need_the_confirmation_header_and_a_known_action():
    sent = []

    async def command(action, reason):
        sent.append((action, reason))
        return [{"target": "engine", "answered": True, "ok": True, "message": ""}]

    app = make_app(lambda: {"hello": 1}, command)

    async def fn(c):
        page = await c.get("/")
        assert page.status == 200 and "app.js" in await page.text()
        assert (await (await c.get("/api/state")).json()) == {"hello": 1}
        r = await c.post("/api/command", json={"action": "flatten"})
        assert r.status == 403                                               # no confirmation header
        r = await c.post("/api/command", json={"action": "flatten"}, headers={"X-Scalper-Action": "halt"})
        assert r.status == 403                                               # header for another action
        r = await c.post("/api/command", json={"action": "sell_everything"},
                         headers={"X-Scalper-Action": "sell_everything"})
        assert r.status == 400
        r = await c.post("/api/command", data=b"{not json", headers={"X-Scalper-Action": "halt"})
        assert r.status == 400
        r = await c.post("/api/command", json={"action": "halt", "reason": "lunch"}, headers={"X-Scalper-Action": "halt"})
        assert r.status == 200 and (await r.json())["ok"] is True
    run_client(app, fn)
    assert sent == [("halt", "lunch")]


def test_a_token_guards_every_request():
    async def command(action, reason):
        return []

    app = make_app(lambda: {"x": 1}, command, token="t" * 20)

    async def fn(c):
        assert (await c.get("/api/state")).status == 401
        assert (await c.get("/api/state", headers={"Authorization": "Bearer wrong"})).status == 401
        assert (await c.get("/api/state", headers={"Authorization": "Bearer " + "t" * 20})).status == 200
        r = await c.get("/?token=" + "t" * 20)
        assert r.status == 200 and r.cookies["scalper_token"].value == "t" * 20
        assert (await c.get("/api/state")).status == 200                    # the cookie now carries it
    run_client(app, fn)


def test_without_a_token_only_a_loopback_host_is_served():
    async def command(action, reason):
        raise AssertionError("must not be reached")

    app = make_app(lambda: {"x": 1}, command, allowed_hosts={"127.0.0.1", "localhost", "::1"})

    async def fn(c):
        assert (await c.get("/api/state", headers={"Host": "localhost:8765"})).status == 200
        assert (await c.get("/api/state", headers={"Host": "[::1]:8765"})).status == 200
        r = await c.post("/api/command", json={"action": "flatten"},
                         headers={"Host": "rebound.example:8765", "X-Scalper-Action": "flatten"})
        assert r.status == 403 and "unexpected Host" in await r.text()
    run_client(app, fn)
