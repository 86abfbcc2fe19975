"""Replay as a real process: two replays of a file publish the same messages in the same
order; a recording made by the live feed replays to the ticks the feed published live."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from common.bus import Subscriber
from common.config import load_config
from common.messages import FeedStatus, Heartbeat, Quote, Trade
from services.replay.convert import convert
from tests.harness.config import write_config
from tests.harness.procs import ROOT, wait_for

pytestmark = pytest.mark.integration
REAL = ROOT / "data" / "real" / "ESM8_2018-05-07_trades.csv.gz"


def replay_once(tmp_path: Path, recording: Path, *args: str) -> list:
    """Run the replay process to the end; return every envelope a subscriber saw."""
    cfg_path = write_config(tmp_path, replay={"start_delay_s": 0.5, "linger_s": 0.5})
    cfg = load_config(cfg_path)
    sub = Subscriber("test", cfg.bus.feed_pub, cfg.bus.feed_snap)
    out = open(tmp_path / "replay.out", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "services.replay", str(recording), "--config", str(cfg_path),
                             *args], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    envs = []
    try:
        while True:
            got = sub.recv(300)
            envs.extend(got)
            if not got and proc.poll() is not None:
                break
    finally:
        if proc.poll() is None:
            proc.kill()
        sub.close()
    assert proc.returncode == 0, (tmp_path / "replay.out").read_text()[-2000:]
    assert sub.stats.gaps == 0 and sub.stats.malformed == 0
    return envs


def body(env) -> tuple:
    return (env.type, env.seq, env.ts_ns, env.msg)


def test_two_replays_of_a_real_session_slice_are_identical(tmp_path):
    rec = tmp_path / "esm8.rec"
    assert convert(REAL, rec, "CON.F.US.EP.M18") > 70_000
    a = replay_once(tmp_path / "a", rec, "--speed", "max", "--from", "10:00", "--to", "10:20")
    b = replay_once(tmp_path / "b", rec, "--speed", "max", "--from", "10:00", "--to", "10:20")
    ticks_a = [body(e) for e in a if e.type in ("Quote", "Trade", "Heartbeat")]
    ticks_b = [body(e) for e in b if e.type in ("Quote", "Trade", "Heartbeat")]
    # heartbeat stats carry wall-clock latencies: compare their exchange time only
    norm = lambda xs: [(t, s, ts, m.exch_ns if t == "Heartbeat" else m) for t, s, ts, m in xs]  # noqa: E731
    assert norm(ticks_a) == norm(ticks_b)
    trades = [e.msg for e in a if isinstance(e.msg, Trade)]
    assert len(trades) > 3000
    assert all(t.size == 1 and t.aggressor in (1, -1) for t in trades)
    quotes = [e.msg for e in a if isinstance(e.msg, Quote)]
    assert all(q.ask_ticks - q.bid_ticks == 1 for q in quotes)
    hbs = [e.msg.exch_ns for e in a if isinstance(e.msg, Heartbeat)]
    assert len(hbs) >= 20 * 60 - 5 and hbs == sorted(hbs)
    assert any(isinstance(e.msg, FeedStatus) and e.msg.state == "down" for e in a)


def test_a_feed_recording_replays_to_the_live_ticks(tmp_path):
    from tests.integration.test_feed_process import Collector, push_tick, start, subscribed, synced
    from tests.unit.test_hub import FakeHub
    hub = FakeHub()
    cfg, sub, proc = start(tmp_path / "live", hub)
    col = Collector(sub)
    try:
        wait_for(subscribed(hub, 2), 15, what="subscriptions")
        wait_for(synced(col), 5, what="subscriber synced")
        for i in range(20):
            push_tick(hub, 5000 + 0.25 * (i % 7))
        hub.push("GatewayQuote", "CON.F.US.MES.H26", {"bestAsk": 5003.0})        # partial quote
        hub.push("GatewayTrade", "CON.F.US.MES.H26", {"price": 5002.5, "volume": 2, "type": 1})  # single object
        wait_for(lambda: len(col.of(Trade)) >= 21, 5, what=f"live trades (stats {col.sub.stats})")
        time.sleep(1.2)           # recorder flushes every second
    finally:
        proc.terminate()
        hub.close()
    live = [e.msg for e in col.poll() if isinstance(e.msg, (Quote, Trade)) and not e.snapshot]
    [rec] = list((tmp_path / "live" / "logs" / "ticks").glob("*.rec"))
    replayed = [e.msg for e in replay_once(tmp_path / "replay", rec, "--speed", "max")
                if isinstance(e.msg, (Quote, Trade)) and not e.snapshot]
    assert replayed == live and len(live) == 42
