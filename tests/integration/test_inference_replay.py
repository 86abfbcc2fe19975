"""The worker as a real process: recorded ticks in through a PUB socket, one prediction per bar out."""
from __future__ import annotations

import os
import threading
import time

import numpy as np

from common.config import ModelConfig
import pytest
import yaml
import zmq

from common.bus import Publisher, Subscriber
from common.messages import Bar, Heartbeat, Prediction, Quote, ShadowPrediction, Trade
from services.inference.features import WARMUP
from services.inference.model import load_model
from services.inference.recorded import Ticks, load_trades
from services.inference.worker import InferenceWorker
from tests.harness.config import write_config
from tests.harness.procs import ROOT, ServiceProcess, wait_for

pytestmark = pytest.mark.integration
S = 1_000_000_000
MINUTES = 16


def first_minutes(minutes: int) -> Ticks:
    t = load_trades()
    n = int(np.searchsorted(t.ts_ns, t.ts_ns[0] + minutes * 60 * S))
    return Ticks(t.ts_ns[:n], t.price_ticks[:n], t.aggressor[:n])


def offline(ticks: Ticks, contract: str) -> list:
    """What the worker must publish: the same logic run in-process on the same ticks."""
    w = InferenceWorker(load_model(ROOT / ModelConfig().path, ROOT / ModelConfig().config), contract)
    out = []
    for i in range(len(ticks)):
        ts = int(ticks.ts_ns[i])
        out += w.on_trade(contract, int(ticks.price_ticks[i]), 1, int(ticks.aggressor[i]), ts)
        q = ticks.quote(i)
        if q:
            out += w.on_quote(contract, q[0], q[1], ts)
    out += w.on_time(int(ticks.ts_ns[-1]) + S)
    return out


class FakeFeed:
    """The feed's PUB + snapshot sockets, with the snapshot REP served from a thread."""

    def __init__(self, pub_ep: str, snap_ep: str):
        self.ctx = zmq.Context()
        self.pub = Publisher("feed", pub_ep, snap_ep, ctx=self.ctx)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            if self.pub.snap.poll(50):
                self.pub.serve_snapshot()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2)
        self.pub.close()
        self.ctx.term()


def collect(sub: Subscriber, into: dict, timeout_ms: int = 200) -> None:
    for env in sub.recv(timeout_ms):
        m = env.msg
        into.setdefault(type(m).__name__, []).append(m)
        if isinstance(m, Prediction):
            into.setdefault("prediction_hops", []).append(env.hops)


def test_replayed_session_gives_one_prediction_per_bar(tmp_path):
    cfg_path = write_config(tmp_path)
    bus = yaml.safe_load(cfg_path.read_text())["bus"]
    contract = yaml.safe_load(cfg_path.read_text())["trading"]["contract"]
    ticks = first_minutes(MINUTES)
    want = offline(ticks, contract)
    feed = FakeFeed(bus["feed_pub"], bus["feed_snap"])
    sub = Subscriber("test", bus["inference_pub"], bus["inference_snap"], topics=[Bar, Prediction, Heartbeat])
    got: dict[str, list] = {}
    proc = ServiceProcess("inference", cfg_path).start()
    try:
        # handshake: until the worker's heartbeat shows it receives our feed (no slow-joiner loss)
        def connected() -> bool:
            feed.pub.publish(Heartbeat("feed", "ok", os.getpid(), 0.0, 0))
            collect(sub, got, 100)
            assert proc.alive(), proc.tail()
            return any(h.service == "inference" and h.stats.get("feed_msgs", 0) > 0 for h in got.get("Heartbeat", []))
        wait_for(connected, timeout=30, what=f"inference heartbeat with feed messages\n{proc.tail()}")
        got.clear()

        for i in range(len(ticks)):
            ts = int(ticks.ts_ns[i])
            feed.pub.publish(Trade(contract, int(ticks.price_ticks[i]), 1, int(ticks.aggressor[i]), ts, ts), ts_ns=ts)
            q = ticks.quote(i)
            if q:
                feed.pub.publish(Quote(contract, q[0], q[1], int(ticks.price_ticks[i]), ts, ts), ts_ns=ts)
            if i == len(ticks) // 2:
                feed.pub.sock.send_multipart([b"Trade", b"\x93garbage"])     # malformed: counted, dropped
                feed.pub.publish(Trade("CON.F.US.MNQ.M18", 1, 1, 1, ts, ts))   # another contract: ignored
            if i % 500 == 0:
                collect(sub, got, 0)
        feed.pub.publish(Heartbeat("feed", "ok", os.getpid(), 1.0, int(ticks.ts_ns[-1]) + S))

        n_bars = sum(1 for m in want if isinstance(m, Bar) and m.interval_s == 1)
        wait_for(lambda: collect(sub, got) or len(got.get("Prediction", [])) >= n_bars, timeout=30,
                 what=f"{n_bars} predictions (got {len(got.get('Prediction', []))})\n{proc.tail()}")
        time.sleep(1.2)
        collect(sub, got, 300)
    finally:
        code = proc.terminate(10)
        feed.close()
        sub.close()

    preds = got["Prediction"]
    want_preds = [m for m in want if isinstance(m, Prediction)]
    assert len(want_preds) == n_bars == MINUTES * 60
    assert [p.bar_start_ns for p in preds] == [p.bar_start_ns for p in want_preds]       # one per bar, in order
    assert np.all(np.diff([p.bar_start_ns for p in preds]) == S)
    sec_bars = [b for b in got["Bar"] if b.interval_s == 1]
    assert sec_bars == [m for m in want if isinstance(m, Bar) and m.interval_s == 1]
    assert [b for b in got["Bar"] if b.interval_s == 60] == [m for m in want if isinstance(m, Bar) and m.interval_s == 60]
    assert len([b for b in got["Bar"] if b.interval_s == 60]) == MINUTES   # the last one closed by the heartbeat
    for p, w in zip(preds, want_preds):
        assert (p.direction, p.close_ticks, p.atr_ticks, p.spread_ticks, p.model_version) == \
               (w.direction, w.close_ticks, w.atr_ticks, w.spread_ticks, w.model_version)
        np.testing.assert_allclose(p.probs, w.probs, rtol=1e-5)
        assert p.confidence == max(p.probs) and p.feature_us > 0 and p.inference_us > 0
    # every prediction carries its stage timestamps, in order, for the session report's hop latencies
    for h in got["prediction_hops"]:
        assert h["bar_closed"] <= h["features_done"] <= h["model_scored"], h
    assert all("warmup" in p.out_of_range and not p.features_in_range for p in preds[:WARMUP - 1])
    assert not any("warmup" in p.out_of_range for p in preds[WARMUP - 1:])
    # 1-minute Wilder ATR(14): 0.0 until the 14th minute bar closes, which happens with second 14*60-1
    assert all(p.atr_ticks == 0.0 for p in preds[:14 * 60 - 1]) and all(p.atr_ticks > 0 for p in preds[14 * 60 - 1:])
    hb = [h for h in got["Heartbeat"] if h.service == "inference"][-1]
    assert hb.stats["malformed"] >= 1 and hb.stats["other_contract"] >= 1
    assert hb.stats["predictions"] == n_bars and hb.stats["late_ticks"] == 0
    assert code == 0, proc.tail()


def test_refuses_to_start_without_its_model(tmp_path):
    cfg_path = write_config(tmp_path, model={"path": str(tmp_path / "missing.onnx")})
    proc = ServiceProcess("inference", cfg_path).start()
    code = proc.proc.wait(30)
    assert code == 2
    lines = [ln for ln in proc.output().splitlines() if "refusing to start" in ln]
    assert len(lines) == 1 and "missing.onnx not found" in lines[0], proc.output()


def test_refuses_to_start_on_a_bad_config_value(tmp_path):
    cfg_path = write_config(tmp_path, inference={"max_gap_s": -3})
    proc = ServiceProcess("inference", cfg_path).start()
    assert proc.proc.wait(30) == 2
    assert "inference.max_gap_s = -3" in proc.output(), proc.output()


def test_live_mode_refuses_a_model_without_a_measured_edge(tmp_path):
    cfg_path = write_config(tmp_path, api={"mode": "live", "account_id": 1, "base_url": "https://api.topstepx.com",
                                           "ws_url": "https://rtc.topstepx.com/hubs/market",
                                           "user_hub_url": "https://rtc.topstepx.com/hubs/user"},
                            model={"demo_threshold": False})   # nothing connects: it stops at the model check
    proc = ServiceProcess("inference", cfg_path).start()
    assert proc.proc.wait(30) == 2, proc.output()
    lines = [ln for ln in proc.output().splitlines() if "refusing to start" in ln]
    assert len(lines) == 1 and "no measured edge" in lines[0] and "model.allow_unproven_model" in lines[0], \
        proc.output()


def test_shadow_model_scores_beside_the_trading_one_published_and_logged(tmp_path):
    shadow_dir = tmp_path / "shadow"
    shadow_dir.mkdir()
    for name in ("model.onnx", "config.json"):                 # the demo model as its own shadow
        (shadow_dir / name).write_bytes((ROOT / ModelConfig().config).parent.joinpath(name).read_bytes())
    cfg_path = write_config(tmp_path, model={"shadow_path": str(shadow_dir / "model.onnx"),
                                             "shadow_config": str(shadow_dir / "config.json")})
    raw = yaml.safe_load(cfg_path.read_text())
    bus, contract = raw["bus"], raw["trading"]["contract"]
    ticks = first_minutes(6)
    feed = FakeFeed(bus["feed_pub"], bus["feed_snap"])
    sub = Subscriber("test", bus["inference_pub"], bus["inference_snap"], topics=[Prediction, ShadowPrediction, Heartbeat])
    got: dict[str, list] = {}
    proc = ServiceProcess("inference", cfg_path).start()
    try:
        def connected() -> bool:
            feed.pub.publish(Heartbeat("feed", "ok", os.getpid(), 0.0, 0))
            collect(sub, got, 100)
            assert proc.alive(), proc.tail()
            return any(h.service == "inference" and h.stats.get("feed_msgs", 0) > 0 for h in got.get("Heartbeat", []))
        wait_for(connected, timeout=30, what=f"inference heartbeat with feed messages\n{proc.tail()}")
        got.clear()
        for i in range(len(ticks)):
            ts = int(ticks.ts_ns[i])
            feed.pub.publish(Trade(contract, int(ticks.price_ticks[i]), 1, int(ticks.aggressor[i]), ts, ts), ts_ns=ts)
            q = ticks.quote(i)
            if q:
                feed.pub.publish(Quote(contract, q[0], q[1], int(ticks.price_ticks[i]), ts, ts), ts_ns=ts)
            if i % 500 == 0:
                collect(sub, got, 0)
        feed.pub.publish(Heartbeat("feed", "ok", os.getpid(), 1.0, int(ticks.ts_ns[-1]) + S))
        wait_for(lambda: collect(sub, got) or len(got.get("ShadowPrediction", [])) >= 6 * 60, timeout=30,
                 what=f"360 shadow predictions (got {len(got.get('ShadowPrediction', []))})\n{proc.tail()}")
    finally:
        code = proc.terminate(10)
        feed.close()
        sub.close()
    preds, shadows = got["Prediction"], got["ShadowPrediction"]
    assert [s.bar_start_ns for s in shadows] == [p.bar_start_ns for p in preds]
    assert all((s.direction, s.primary_direction, s.model_version) == (p.direction, p.direction, p.model_version)
               for s, p in zip(shadows, preds))
    day = yaml.safe_load(cfg_path.read_text())["logging"]["dir"]
    (log,) = list((tmp_path / "logs").glob("shadow_*.csv"))
    assert len(log.read_text().splitlines()) == 1 + len(shadows), day
    assert code == 0, proc.tail()
