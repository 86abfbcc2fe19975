"""Order gateway drills against the simulator's fault injection (real processes, no fakes): a
5xx burst while protecting, a 429 storm in the middle of a flatten, REST 4 s late, a 20 s broker
freeze, kill -9 of the gateway in each phase of a trade. The checker (orders_checker.py) reads
the simulator's state every 100 ms and fails the drill on any breach of the gateway's promise."""
from __future__ import annotations

import time

import pytest

from common.messages import Heartbeat, OrderCommand
from tests.harness.sim import SimProcess
from tests.integration.orders_checker import Checker
from tests.integration.orders_helpers import Gw, positions, price, protected, wait_for, working

pytestmark = pytest.mark.integration


@pytest.fixture
def sim(tmp_path):
    with SimProcess(tmp_path / "sim", speed=1.0) as s:
        yield s


@pytest.fixture
def gw(tmp_path, sim):
    g = Gw(tmp_path, sim, api={"order_timeout_s": 1.0, "request_timeout_s": 2.0}).start()
    yield g
    g.stop()
    # shown by pytest for a failing drill only: the gateway's own account
    print("\n".join(ln for ln in g.proc.output().splitlines() if "DEBUG" not in ln)[-8000:])


def checker(gw: Gw, sim) -> Checker:
    return Checker(sim, gw.cfg.bus.orders_cmd, gw.cfg.risk.max_contracts)


def verdict(chk: Checker, gw: Gw) -> None:
    """The checker's verdict, with the gateway's own account of what it did when it fails."""
    try:
        chk.check()
    except AssertionError as exc:
        log = "\n".join(ln for ln in gw.proc.output().splitlines() if "DEBUG" not in ln)[-6000:]
        raise AssertionError(f"{exc}\n--- gateway log ---\n{log}") from None


def quick(gw: Gw, key: str, action: str, **kw):
    t0 = time.perf_counter()
    rep = gw.client.request(OrderCommand(key, action, contract=gw.sim.contract_id, **kw), timeout_ms=2000,
                            retries=0).msg
    return rep, (time.perf_counter() - t0) * 1000


def test_drill_5xx_burst_while_protecting(gw, sim):
    price(sim, "6050.00")
    with checker(gw, sim) as chk:
        chk.broker_s = 60.0                       # the broker answers nothing but 5xx: measured below
        rep, ms = quick(gw, "SE1", "enter", direction=-1, size=2, stop_ticks=8, target_ticks=16)
        assert rep.ok and ms < 250, (rep, ms)
        token = sim.token()
        wait_for(lambda: positions(sim), 10, what="the short")
        t0 = time.monotonic()
        sim.control("http_error", status=503, count=30)
        # the broker's own answer time: until a REST call is answered again (this probe uses the
        # same faults, so it shortens the burst a little, as any client of the account would)
        while time.monotonic() - t0 < 60:
            try:
                sim.api("/api/Position/searchOpen", {"accountId": sim.account_id}, token)
                break
            except Exception:
                time.sleep(0.1)
        chk.broker_s = time.monotonic() - t0
        wait_for(lambda: protected(sim, 2) or (not positions(sim) and not working(sim)), 30,
                 what="protected again (or closed) after the burst")
        time.sleep(1.0)
        chk.broker_s = 0.0
        rep, ms = quick(gw, "XS1", "exit")
        assert ms < 250, ms
        wait_for(lambda: not positions(sim) and not working(sim), 20, what="flat")
    verdict(chk, gw)


def test_drill_429_storm_in_the_middle_of_a_flatten(gw, sim):
    price(sim, "6050.00")
    assert gw.enter("LE1", size=2).status == "accepted"
    wait_for(lambda: protected(sim, 2), 10, what="bracket")
    with checker(gw, sim) as chk:
        chk.broker_s = 3.0
        sim.control("http_error", status=429, count=25)
        rep, ms = quick(gw, "op-flatten-1", "flatten", reason="drill")
        assert rep.ok and ms < 250, (rep, ms)
        wait_for(lambda: not positions(sim) and not working(sim), 30, what="flat after the storm")
        assert gw.status()["halted"] is False
    verdict(chk, gw)


@pytest.mark.slow
def test_drill_rest_4s_late(tmp_path, sim):
    # a deployment that waits for a slow broker: its timeouts are longer than the 4 s delay
    gw = Gw(tmp_path, sim, api={"order_timeout_s": 6.0, "request_timeout_s": 8.0},
            orders={"lookup_timeout_s": 12.0, "flat_verify_s": 20.0}).start()
    try:
        _drill_rest_4s_late(gw, sim)
    finally:
        gw.stop()


def _drill_rest_4s_late(gw, sim):
    price(sim, "6050.00")
    with checker(gw, sim) as chk:
        chk.broker_s = 4.0 + 1.0                   # a stop cannot be at the broker before it answers
        # flat -> no working order takes two answers: REST confirms flat, then the cancels
        chk.flat_broker_s = 2 * chk.broker_s
        sim.control("delay", ms=4000, count=-1)
        rep, ms = quick(gw, "LE1", "enter", direction=1, size=1, stop_ticks=8, target_ticks=16)
        assert rep.ok and rep.status == "accepted" and ms < 250, (rep, ms)
        h, ms_h = quick(gw, "op-halt-1", "halt", reason="drill")
        assert h.status == "halted" and ms_h < 250
        r, ms_r = quick(gw, "op-resume-1", "resume")
        assert r.ok and ms_r < 250
        wait_for(lambda: protected(sim), 40, what="bracket with REST 4 s late")
        rep, ms = quick(gw, "XL1", "exit")
        assert ms < 250
        wait_for(lambda: not positions(sim) and not working(sim), 60, what="flat with REST 4 s late")
        sim.control("clear")
    verdict(chk, gw)


@pytest.mark.slow
def test_drill_20s_freeze_heartbeats_and_commands(gw, sim):
    price(sim, "6050.00")
    assert gw.enter("LE1").status == "accepted"
    wait_for(lambda: protected(sim), 10, what="bracket")
    with checker(gw, sim) as chk:
        n = len(gw.envs)
        sim.control("timeout", seconds=20, count=-1)
        end = time.monotonic() + 20
        while time.monotonic() < end:
            rep, ms = quick(gw, f"op-halt-{time.time_ns()}", "halt", reason="drill")
            assert rep.status == "halted" and ms < 250, (rep, ms)
            time.sleep(0.5)
        sim.control("clear")
        beats = [e.ts_ns / 1e9 for e in (gw.of(object) and gw.envs[n:]) if isinstance(e.msg, Heartbeat)
                 and not e.snapshot]
        assert len(beats) >= 15 and max(b - a for a, b in zip(beats, beats[1:])) < 2.0, beats
        assert gw.cmd("op-resume-1", "resume").ok
        rep, ms = quick(gw, "op-flatten-1", "flatten", reason="after the freeze")
        assert ms < 250
        wait_for(lambda: not positions(sim) and not working(sim), 40, what="flat after the freeze")
    verdict(chk, gw)


@pytest.mark.parametrize("phase", [pytest.param("placing", marks=pytest.mark.slow),
                                   pytest.param("filled", marks=pytest.mark.slow),
                                   "protected",
                                   pytest.param("exiting", marks=pytest.mark.slow)])
def test_drill_kill9_in_each_phase(gw, sim, phase):
    price(sim, "6050.00")
    with checker(gw, sim) as chk:
        if phase == "placing":
            sim.control("delay", ms=1500, count=1, path="/api/Order/place")
        if phase == "filled":
            sim.control("delay", ms=800, count=2, path="/api/Order/place")    # the entry, then the stop
        rep, _ = quick(gw, "LE1", "enter", direction=1, size=1, stop_ticks=8, target_ticks=16)
        assert rep.ok
        if phase == "placing":
            time.sleep(0.5)
        elif phase == "filled":
            wait_for(lambda: positions(sim), 10, what="the fill")
        else:
            wait_for(lambda: protected(sim), 10, what="bracket")
        if phase == "exiting":
            sim.control("delay", ms=1500, count=1, path="/api/Position/closeContract")
            quick(gw, "XL1", "exit")
            time.sleep(0.3)
        chk.paused_asking.set()
        t0 = time.monotonic()
        chk.broker_s = 30.0                       # nobody is there to protect it until the restart
        gw.proc.kill9()
        gw.start()
        chk.broker_s = time.monotonic() - t0 + 1.0    # the restart took this long
        chk.paused_asking.clear()
        wait_for(lambda: protected(sim) or (not positions(sim) and not working(sim)), 20,
                 what=f"protected or flat after a kill -9 while {phase}")
        time.sleep(1.0)
        gw.cmd("op-flatten-1", "flatten", reason="drill over")
        wait_for(lambda: not positions(sim) and not working(sim), 20, what="flat")
        entries = [o for o in sim.state()["orders"] if (o.get("customTag") or "").startswith("LE1:entry")]
        assert len(entries) <= 1, entries          # never placed twice
    verdict(chk, gw)
