"""Session files from a scripted session of fills: trades CSV, metrics JSON, persisted state, report."""
from __future__ import annotations

import csv
import json
import re

from common.messages import Fill
from services.positions import journal
from services.positions.ledger import Ledger
from services.positions.report import build_report, load_session, trips_from_csv
from tests.unit.test_positions_ledger import BUY, MES, S, SELL, T0, day_of


def scripted_session() -> Ledger:
    lg = Ledger(100_000, day_of)
    script = [  # (t s, side, size, price, leg, signal id)
        (0, BUY, 1, "6050.00", "entry", "LE1"), (60, SELL, 1, "6053.50", "target", ""),      # +14 ticks
        (120, SELL, 1, "6055.00", "entry", "SE2"), (150, BUY, 1, "6057.00", "stop", ""),     # -8 ticks
        (200, BUY, 2, "6056.00", "entry", "LE3"), (230, SELL, 1, "6057.00", "target", ""),
        (260, SELL, 1, "6055.00", "eod", ""),                                                 # +4 -4
    ]
    for i, (t, side, size, price, leg, sig) in enumerate(script):
        lg.apply_fill(Fill(100 + i, 1, MES, leg, side, size, int(float(price) * 4), 37 * size, None, T0 + t * S,
                           signal_id=sig, model_version="v1" if sig else ""))
    return lg


def test_trades_csv_and_metrics(tmp_path):
    lg = scripted_session()
    day = lg.day
    journal.write_trades_csv(tmp_path, day, lg.trips)
    rows = list(csv.DictReader(open(tmp_path / f"trades_{day}.csv")))
    pnl_col = next(c for c in rows[0] if "pnl" in c)
    assert pnl_col == "pnl_usd"
    assert [r["pnl_usd"] for r in rows] == ["16.76", "-10.74", "-1.48"]
    assert [r["fees_usd"] for r in rows] == ["0.74", "0.74", "1.48"]
    assert [r["exit_reason"] for r in rows] == ["target", "stop", "eod"]
    assert [r["side"] for r in rows] == ["LONG", "SHORT", "LONG"]
    assert [r["ticks"] for r in rows] == ["14", "-8", "0"]
    assert [r["signal_id"] for r in rows] == ["LE1", "SE2", "LE3"]
    assert rows[0]["model_version"] == "v1"
    assert rows[0]["entry_time"] == "2026-11-23 10:00:00.000" and rows[0]["exit_time"] == "2026-11-23 10:01:00.000"
    assert (rows[2]["size"], rows[2]["entry_price"], rows[2]["exit_price"]) == ("2", "6056.00", "6056.00")

    m = journal.metrics(lg.trips, {"orders": {"ack_ms": 12.5}})
    journal.write_metrics(tmp_path, day, m)
    m = json.loads((tmp_path / f"metrics_{day}.json").read_text())
    assert m["trades"] == 3 and m["wins"] == 1 and m["losses"] == 2
    assert m["win_rate"] == 0.3333
    assert m["net_pnl_cents"] == 1676 - 1074 - 148 == lg.realized_day_cents
    assert m["net_pnl_usd"] == 4.54 and m["fees_usd"] == 2.96 and m["gross_pnl_usd"] == 7.50
    assert m["max_drawdown_cents"] == 1074 + 148
    assert m["profit_factor"] == round(1676 / (1074 + 148), 4)
    assert m["avg_hold_s"] == round((60 + 30 + 60) / 3, 3)
    assert m["exit_reasons"] == {"target": 1, "stop": 1, "eod": 1}
    assert m["latency"] == {"orders": {"ack_ms": 12.5}}
    assert lg.consecutive_losses == 2 and lg.trades_today == 3


def test_restart_with_persisted_state(tmp_path):
    lg = scripted_session()
    lg.apply_fill(Fill(900, 1, MES, "entry", BUY, 1, 24200, 37, None, T0 + 400 * S, signal_id="LE9"))
    journal.save_state(tmp_path, lg.to_json())
    assert not list((tmp_path / "state").glob(".*tmp"))       # written through a temp file, then replaced
    again = Ledger(0, day_of)
    again.load_json(journal.load_state(tmp_path))
    assert again.account() == lg.account()
    assert again.trips == lg.trips and again.position(MES) == lg.position(MES)
    # the gateway's snapshot repeats the fills after a restart: nothing is counted twice
    assert again.apply_fill(Fill(900, 1, MES, "entry", BUY, 1, 24200, 37, None, T0 + 400 * S)) == []
    [rt] = again.apply_fill(Fill(901, 1, MES, "target", SELL, 1, 24210, 37, None, T0 + 460 * S))
    assert rt.pnl_cents == 10 * 125 - 74 and rt.signal_id == "LE9"
    assert again.trades_today == 4 and again.consecutive_losses == 0
    assert journal.load_state(tmp_path / "nowhere") is None


def test_report_file(tmp_path):
    lg = scripted_session()
    day = lg.day
    journal.write_trades_csv(tmp_path, day, lg.trips)
    journal.write_metrics(tmp_path, day, journal.metrics(lg.trips))
    # the trades CSV reads back into the same round trips (times to the millisecond)
    assert [(t.direction, t.size, t.entry_price, t.exit_price, t.ticks, t.pnl_cents, t.fees_cents, t.exit_reason,
             t.entry_ns, t.exit_ns) for t in trips_from_csv(tmp_path / f"trades_{day}.csv")] == \
        [(t.direction, t.size, t.entry_price, t.exit_price, t.ticks, t.pnl_cents, t.fees_cents, t.exit_reason,
          t.entry_ns, t.exit_ns) for t in lg.trips]
    assert load_session(tmp_path, day).trips[0].pnl_cents == 1676
    path = build_report(tmp_path, day)
    text = path.read_text()
    assert path.name == f"report_{day}.html"
    assert "+$4.54" in text                                   # net P&L card
    for chart in ("equity", "price", "pnl_hour", "pnl_reason", "confidence", "latency"):
        assert f"data-chart='{chart}'><svg" in text, chart
    assert text.count("<tr><td>") == 3                        # one row per round trip
    assert "<script" not in text and not re.search(r"(src|href)=[\"']https?:", text)   # opens offline
    # no files at all: still a readable page
    empty = build_report(tmp_path / "empty", "2026-01-02")
    assert "No round trips" in empty.read_text()
