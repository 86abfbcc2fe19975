"""The backtest's decision loop (the engine's modules) on hand-built ticks with a known outcome."""
from __future__ import annotations

import pytest

import csv

import numpy as np

from common.brackets import NO_TRADE, Tape
from common.config import load_config
from common.messages import Bar, Prediction
from services.modelctl.backtest import Backtest, run_backtest
from tests.unit._recording_kit import T0, write_recording

S = 1_000_000_000
C = "CON.F.US.MES.H26"


@pytest.fixture(autouse=True)
def _message_cache_in_tmp(tmp_path, monkeypatch):
    from services.modelctl import data
    monkeypatch.setattr(data, "CACHE_DIR", tmp_path / "cache")


def tape(events) -> Tape:
    return Tape(np.array([T0 + int(e[0] * S) for e in events], dtype=np.int64),
                np.array([e[1] for e in events], dtype=np.int64), np.array([e[2] for e in events], dtype=np.int64),
                np.array([NO_TRADE if e[3] is None else e[3] for e in events], dtype=np.int64))


def pred(sec: int, direction: int, conf: float, close: int = 100, atr: float = 8 / 3, in_range: bool = True) -> Prediction:
    return Prediction(C, T0 + sec * S, direction, conf, [0.1, 0.1, 0.8], "test-v", close, atr, 1, 50.0, 50.0,
                      in_range, [] if in_range else ["rv_60"])


def bar(sec: int, bid: int = 99, ask: int = 100) -> Bar:
    return Bar(C, 1, T0 + sec * S, ask, ask, bid, ask, 1, 1, 0, 1, bid, ask)


def test_a_long_hits_its_target_net_of_fees():
    cfg = load_config(None)
    t = tape([(1, 99, 100, None), (2, 101, 102, 102), (3, 106, 107, 107), (9, 106, 107, None)])
    bt = Backtest(cfg, t, "test-v", min_confidence=0.6)
    bt.on_prediction(pred(0, 1, 0.9), bar(0))         # long at the ask 100, stop 4, target 6, 2 contracts
    bt.on_prediction(pred(5, 1, 0.9), bar(5, 106, 107))
    bt.finish()
    assert len(bt.trips) == 2
    first = bt.trips[0]
    assert (first.direction, first.size, first.exit_reason, first.ticks) == (1, 2, "target", 6)
    assert first.pnl_cents == 6 * 125 * 2 - 2 * 74                                  # MES: 1.25 USD a tick, 0.74 a round trip
    assert bt.trips[1].entry_price == "26.75" and bt.trips[1].exit_reason == "end"   # re-entered at the ask 107


def test_the_engines_gates_and_exits_apply():
    cfg = load_config(None)
    t = tape([(1, 99, 100, None), (3, 98, 99, None), (20, 98, 99, None)])
    bt = Backtest(cfg, t, "test-v", min_confidence=0.6)
    bt.on_prediction(pred(0, 1, 0.5), bar(0))                       # below the threshold: nothing
    bt.on_prediction(pred(1, 1, 0.9, in_range=False), bar(1))        # range gate blocks (policy block)
    assert bt.pos is None and bt.blocked == {"features_out_of_range": 1}
    bt.on_prediction(pred(2, -1, 0.9), bar(2, 99, 100))              # short at the bid 99
    bt.on_prediction(pred(4, 1, 0.7), bar(4, 98, 99))                # model turned against (0.7 < reverse 0.75): exit
    assert [(r.direction, r.exit_reason, r.ticks) for r in bt.trips] == [(-1, "signal", 0)]
    assert bt.trips[0].pnl_cents == -2 * 74                          # out at the ask 99 (2 contracts): the fees are the loss


def test_run_backtest_writes_the_session_report(tmp_path):
    cfg = load_config(None)
    # the hand-built tape trades 1-25 lots with 1-3 tick spreads, far outside one derived morning: flag, don't block
    cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"range_policy": "flag"})})
    rec = write_recording(tmp_path / "MESM8_2018-05-07.rec", minutes=25, seed=3)
    res = run_backtest(cfg, rec, out_dir=tmp_path / "out", min_confidence=0.0)
    day = res["day"]
    assert day == "2018-05-07" and res["bars"] > 1400
    with open(tmp_path / "out" / f"trades_{day}.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == res["trades"] > 0
    assert (tmp_path / "out" / f"report_{day}.html").read_text().count("<tr>") >= res["trades"]
    assert (tmp_path / "out" / f"metrics_{day}.json").is_file()
    blocked = res["entries_blocked"]
    assert blocked["features_out_of_range"] <= 301 and blocked["spread_too_wide"] > 0   # only the warm-up still blocks
