"""The session report's pure data step and rendering (the file edge is in test_positions_journal)."""
from __future__ import annotations

from datetime import datetime

from common.clock import NY, from_dt
from common.messages import RoundTrip
from services.positions.report import (
    drawdown, equity_points, hop_medians, pnl_by, render_html, report_data,
)

MES = "CON.F.US.MES.H26"
T0 = from_dt(datetime(2026, 11, 23, 10, 0, tzinfo=NY))
S = 1_000_000_000


def trip(i: int, pnl: int, reason: str = "target", hour_offset_s: int = 0) -> RoundTrip:
    t = T0 + hour_offset_s * S + i * 60 * S
    return RoundTrip(MES, 1 if i % 2 == 0 else -1, 1, "6000.00", "6001.00", t, t + 30 * S, 4, pnl, 74, reason,
                     signal_id=f"LE{t // S}")


def test_taken_and_skipped_predictions_and_equity_against_time():
    trips = [trip(0, 500), trip(1, -800, "stop"), trip(2, 200, "eod", hour_offset_s=3600)]
    preds = [(T0, 1, 0.7), (T0 + S, 1, 0.55), (T0 + 2 * S, -1, 0.6), (T0 + 3 * S, 0, 0.9)]
    signals = [("LONG_ENTRY", f"LE{T0 // S}"), ("EXIT_LONG", f"XL{(T0 + S) // S}"), ("SHORT_ENTRY", "bogus")]
    d = report_data(reversed(trips), day="2026-11-23", predictions=preds, signals=signals)
    assert d.confidence_taken == [0.7]                       # an entry was decided on that bar
    assert d.confidence_skipped == [0.55, 0.6]               # an exit is not an entry; direction 0 is no signal
    assert [t.exit_ns for t in d.trips] == sorted(t.exit_ns for t in trips) and d.contract == MES
    pts = equity_points(d.trips)
    assert pts[0] == (T0, 0) and [v for _, v in pts] == [0, 500, -300, -100]
    assert [v for _, v in drawdown(pts)] == [0, 0, -800, -600]
    assert pnl_by(d.trips, lambda t: t.exit_reason) == {"eod": 200, "stop": -800, "target": 500}


def test_hop_medians_from_the_chains_else_from_the_metrics():
    chains = [{"feed": 10.0, "broker_ack": 3000.0}, {"feed": 30.0, "broker_ack": 1000.0}, {"feed": 20.0}]
    d = report_data([], day="d", hops=chains)
    assert hop_medians(d)["feed"] == (20.0, 30.0) and hop_medians(d)["broker_ack"] == (2000.0, 3000.0)
    m = {"latency": {"orders": {"hop_feed_us_p50": 12.0, "hop_feed_us_p99": 40.0, "hop_total_us_p50": 99.0}}}
    assert hop_medians(report_data([], day="d", metrics=m)) == {"feed": (12.0, 40.0)}


def test_every_chart_is_drawn_even_with_nothing_to_show():
    html_text = render_html(report_data([], day="2026-11-23"))
    for chart in ("equity", "price", "pnl_hour", "pnl_reason", "confidence", "latency"):
        assert f"data-chart='{chart}'><svg" in html_text
    assert "No round trips this session." in html_text and "no predictions recorded" in html_text


def test_a_backtest_report_names_its_bare_symbol():
    bars = [(T0 + i * 60 * S, 24000, 24004, 23996, 24001 + i) for i in range(3)]
    for contract in ("MES", MES):      # a backtest names the symbol; live, the contract id
        html_text = render_html(report_data([trip(0, 500)], day="2026-11-23", bars=bars, contract=contract))
        assert "MES close" in html_text
