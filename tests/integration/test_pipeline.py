"""End to end: every process under a real supervisord, against the simulator.

The simulator replays the real ES tape relabelled to the end of a trading day
(15:44 New York) at high speed, so one test sees warm-up, entries, exits, the
no-new-entries window and the 16:25 flatten within about a minute of wall time.
"""
from __future__ import annotations

import csv
import json
import re
import time
from collections import Counter
from pathlib import Path

import pytest
import zmq

from common.config import load_config
from common.messages import Heartbeat, OrderCommand, Query, Quote, decode, encode
from tests.harness.config import write_config
from tests.harness.pipeline import Pipeline
from tests.harness.procs import wait_for
from tests.harness.sim import SimProcess
from tests.integration.orders_checker import check_keeper_pnl

# whole-pipeline drills: slow (make slow, CI runs them after the default suite)
pytestmark = [pytest.mark.integration, pytest.mark.slow]

DAY = "2026-11-23"          # a Monday, a normal CME session
LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \[(INFO|WARNING|ERROR|DEBUG)\] ")
SIGNAL = re.compile(r"\[INFO\] SIGNAL: (LONG_ENTRY|SHORT_ENTRY|EXIT_LONG|EXIT_SHORT|REVERSE_TO_LONG|REVERSE_TO_SHORT|FLATTEN) conf=\d\.\d\d price=\d+\.\d\d$")
ORDER = re.compile(r"\[INFO\] ORDER: (MARKET (BUY|SELL) \d+ MES @ market|STOP (BUY|SELL) \d+ MES @ \d+\.\d\d|LIMIT (BUY|SELL) \d+ MES @ \d+\.\d\d)$")
FILL = re.compile(r"\[INFO\] FILL: (BOUGHT|SOLD) \d+ MES @ \d+\.\d\d( \(.+\))?$")
CLOSED = re.compile(r"\[INFO\] TRADE CLOSED: [+-]\$\d+\.\d\d \(-?\d+ ticks\)$")


def pipeline_config(tmp_path: Path, sim: SimProcess, **extra) -> Path:
    sections = {
        # the demo model (no edge, one morning of data) is rarely confident; a demo bar makes the drill trade
        "model": {"min_confidence": 0.38, "max_prediction_age_s": 5},
        "trading": {"clock": "event"},
    }
    for k, v in extra.items():
        sections.setdefault(k, {}).update(v)
    return write_config(tmp_path, sim, **sections)


def sim_now(sim: SimProcess) -> str:
    return sim.state()["market"]["now"]


def day_files(cfg_path: Path):
    cfg = load_config(cfg_path)
    d = Path(cfg.logging.dir)
    return d / f"trading_{DAY}.log", d / f"trades_{DAY}.csv", d / f"metrics_{DAY}.json"


def broker_consistent(sim: SimProcess) -> tuple[bool, str]:
    """No duplicate, no orphan: every working order protects an open position of its size."""
    st = sim.state()
    pos = {p["contractId"]: p for p in st["positions"]}
    working = st["working"]
    tags = Counter(o["customTag"] for o in st["orders"] if o.get("customTag"))
    dupes = [t for t, n in tags.items() if n > 1]
    if dupes:
        return False, f"duplicate customTags {dupes}"
    entries = Counter(o["customTag"].split(":")[0] for o in st["orders"]
                      if o.get("customTag", "") and ":entry:" in o["customTag"] and o["status"] == 2)
    if any(n > 1 for n in entries.values()):
        return False, f"an intent filled more than one entry: {entries}"
    for o in working:
        p = pos.get(o["contractId"])
        if p is None:
            return False, f"orphaned working order {o['id']} {o.get('customTag')} with no position"
        if o["size"] - o["fillVolume"] > p["size"]:
            return False, f"working order {o['id']} larger than the position"
    return True, "ok"


@pytest.fixture
def sim(tmp_path):
    s = SimProcess(tmp_path / "sim", speed=40, time_mode="start_at", start_at=f"{DAY}T15:44:00",
                   loop=True)
    with s:
        yield s


def test_full_session_trades_logs_and_flattens(tmp_path, sim):
    cfg_path = pipeline_config(tmp_path, sim)
    log, trades_csv, metrics_json = day_files(cfg_path)
    with Pipeline(tmp_path, cfg_path) as pipe:
        # market time runs 15:44 -> 16:25 at 40x: about a minute of wall time
        wait_for(lambda: sim_now(sim) >= f"{DAY}T21:26:00", 150, interval=1,
                 what=f"market time past the 16:25 flatten (now {sim_now(sim)})\n{pipe.tails()}")
        # the guard and the engine both flatten at 16:25; give the REST verification a moment
        wait_for(lambda: not sim.state()["positions"] and not sim.state()["working"], 30, interval=0.5,
                 what=f"flat with no working orders after 16:25: {sim.state()['positions']} "
                      f"{sim.state()['working']}")
        st = sim.state()
        assert st["trades"], f"no fills at the broker: predictions never became trades\n{pipe.tails()}"
        ok, why = broker_consistent(sim)
        assert ok, why
        # let the keeper journal the last round trip
        time.sleep(2)
    text = log.read_text()
    lines = text.splitlines()
    assert all(LINE.match(l) for l in lines if l and not l.startswith((" ", "\t", "Traceback"))), \
        [l for l in lines if l and not LINE.match(l)][:3]
    for name, rx in (("SIGNAL", SIGNAL), ("ORDER", ORDER), ("FILL", FILL), ("TRADE CLOSED", CLOSED)):
        assert any(rx.search(l) for l in lines), f"no {name} line in the spec's format in {log}"
    # the trades CSV agrees with the simulator's own record of fills
    rows = list(csv.DictReader(trades_csv.open()))
    assert rows, "trades CSV is empty"
    closing = [t for t in st["trades"] if t["profitAndLoss"] is not None]
    broker_net_cents = sum(round(t["profitAndLoss"] * 100) for t in closing) - \
        sum(round(t["fees"] * 100) for t in st["trades"])
    pnl_key = next(k for k in rows[0] if "pnl" in k.lower())
    csv_net_cents = sum(round(float(r[pnl_key]) * 100) if "." in r[pnl_key] else int(r[pnl_key]) for r in rows)
    assert csv_net_cents == broker_net_cents, (csv_net_cents, broker_net_cents)
    metrics = json.loads(metrics_json.read_text())
    assert metrics.get("trades") == len(rows)
    # every entry's hops, tick received -> broker ack, summarised by the gateway and kept in the metrics
    hops = metrics["latency"].get("orders", {})
    assert hops.get("hop_total_us_p50", 0) > 0 and hops.get("hop_inference_us_p99", 0) > 0, metrics["latency"]
    assert any(r.get("exit_reason") in ("eod", "flatten", "target", "stop", "signal") for r in rows)


def test_kill9_drills_no_duplicates_no_orphans(tmp_path):
    """Each service is killed with kill -9 while a position is open (when one opens in time),
    supervisord brings it back, and the broker never shows a duplicate or an orphan. Then the
    simulator drops every WebSocket, answers a burst of 429s and stalls the feed."""
    with SimProcess(tmp_path / "sim", speed=30, time_mode="start_at", start_at=f"{DAY}T15:20:00",
                    loop=True) as sim:
        cfg_path = pipeline_config(tmp_path, sim, model={"min_confidence": 0.38},
                                   risk={"max_consecutive_losses": 50})
        with Pipeline(tmp_path, cfg_path) as pipe:
            killed_in_position = []
            for name in ("orders", "engine", "positions", "inference", "feed"):
                try:
                    wait_for(lambda: sim.state()["positions"], 40, interval=0.2, what="an open position")
                    killed_in_position.append(name)
                except AssertionError:
                    pass                      # no position in time: the drill still kills the service
                pipe.kill9(name)
                time.sleep(1.5)
                ok, why = broker_consistent(sim)
                assert ok, f"after kill -9 {name}: {why}\n{pipe.tails()}"
            assert killed_in_position, f"no service was killed mid-position\n{pipe.tails()}"
            sim.control("drop_ws")
            time.sleep(2)
            sim.control("http_error", status=429, count=5)
            time.sleep(2)
            sim.control("stall", seconds=3)
            wait_for(lambda: sim_now(sim) >= f"{DAY}T21:26:00", 200, interval=1, what="past the flatten")
            wait_for(lambda: not sim.state()["positions"] and not sim.state()["working"], 30, interval=0.5,
                     what=f"flat after the drills: {sim.state()['positions']} {sim.state()['working']}")
            ok, why = broker_consistent(sim)
            assert ok, why
            assert all(pipe.state(n) == "RUNNING" for n in pipe.services), pipe.states()
            # risk limits held: the position never exceeded max_contracts (2) at the broker
            net, peak = 0, 0
            for t in sorted(sim.state()["trades"], key=lambda t: t["id"]):
                net += t["size"] if t["side"] == 0 else -t["size"]
                peak = max(peak, abs(net))
            assert 0 < peak <= 2, peak
            # the keeper agrees with the broker
            from common.bus import LazyPirateClient
            cfg = load_config(cfg_path)
            rep = LazyPirateClient("test", cfg.bus.positions_query, timeout_ms=3000).request(Query("position")).msg
            assert rep.ok
            pos = rep.data.get("position") or rep.data
            assert int(pos.get("size", 0)) == 0
            # and its realized P&L of the day is the broker's own (P&L minus fees)
            check_keeper_pnl(sim, cfg.bus.positions_query, lag_s=2.0)


def test_malformed_messages_on_every_socket_counted_no_crash(tmp_path, sim):
    cfg_path = pipeline_config(tmp_path, sim)
    cfg = load_config(cfg_path)
    with Pipeline(tmp_path, cfg_path) as pipe:
        pids = {n: pipe.pid(n) for n in pipe.services}
        ctx = zmq.Context.instance()
        garbage = [b"\x00\x01garbage", b"\x81\xa4type\xa7Unknown", encode(Quote("x", 1, 2, 1, 0, 0))[:-3]]
        # REP sockets: each must answer an error and keep serving
        for ep in (cfg.bus.orders_cmd, cfg.bus.engine_cmd, cfg.bus.positions_query):
            for g in garbage:
                s = ctx.socket(zmq.REQ)
                s.setsockopt(zmq.LINGER, 0)
                s.connect(ep)
                s.send(g)
                assert s.poll(5000), f"{ep} did not answer garbage"
                rep = decode(s.recv()).msg
                assert getattr(rep, "ok", True) is False, f"{ep} accepted garbage: {rep}"
                s.close()
        # SUB sides: a rogue publisher cannot bind the real endpoints, so inject through the
        # snapshot sockets (REP) too, which every publisher serves
        for name in ("feed", "inference", "engine", "orders", "positions"):
            s = ctx.socket(zmq.REQ)
            s.setsockopt(zmq.LINGER, 0)
            s.connect(getattr(cfg.bus, f"{name}_snap"))
            s.send(b"not a snapshot request")
            assert s.poll(5000), f"{name} snapshot socket did not answer garbage"
            s.recv()
            s.close()
        # the gateway still works after all that
        from common.bus import LazyPirateClient
        rep = LazyPirateClient("t", cfg.bus.orders_cmd, timeout_ms=3000).request(
            OrderCommand(key="status-after-garbage", action="status")).msg
        assert rep.ok
        time.sleep(1)
        assert {n: pipe.pid(n) for n in pipe.services} == pids, "a service restarted after garbage"


def test_operator_cli_status_halt_resume_flatten(tmp_path, sim):
    import subprocess
    import sys
    from tests.harness.procs import ROOT

    cfg_path = pipeline_config(tmp_path, sim)

    def scalper(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "services.cli", "--config", str(cfg_path), *args],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)

    with Pipeline(tmp_path, cfg_path):
        st = wait_for(lambda: (lambda r: r if r.returncode == 0 else None)(scalper("status", "--json")), 30,
                      interval=1, what="every service heartbeating in scalper status")
        for name in ("feed", "inference", "engine", "orders", "positions"):
            assert re.search(rf"^{name}\s+(ok|starting|degraded|halted)\s+\d+", st.stdout, re.M), st.stdout
        assert "breakers" in st.stdout and "orders     " in st.stdout
        r = scalper("halt", "drill")
        assert r.returncode == 0 and "engine:  ok" in r.stdout and "gateway: ok" in r.stdout, r.stdout
        out = json.loads("{" + scalper("status", "--json").stdout.split("\n{", 1)[1])
        assert "manual_halt" in out["engine"]["breakers"] and out["orders"]["halted"] is True, out
        r = scalper("resume")
        assert r.returncode == 0, r.stdout
        out = json.loads("{" + scalper("status", "--json").stdout.split("\n{", 1)[1])
        assert "manual_halt" not in out["engine"]["breakers"] and out["orders"]["halted"] is False, out
        r = scalper("flatten", "drill")
        assert r.returncode == 0 and "gateway: ok" in r.stdout, r.stdout
        assert not sim.state()["positions"] and not sim.state()["working"]
