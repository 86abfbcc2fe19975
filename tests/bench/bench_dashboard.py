"""The dashboard shares the trading box's cores: what it costs per message and per push, and what
the session report costs to draw.

    .venv/bin/python -m tests.bench.bench_dashboard

Reports median / p99 (microseconds unless named) and writes logs/bench/dashboard.json:
- apply_quote: DashboardState.apply(one Quote envelope), the bulk of its bus input
- push: view() + JSON of a full day's state (1800 one-second bars, 50 round trips, 200 fill
  marks, 50 signals and risk events), what each connected page costs every push_s; its size
- report_render_s: render_html of a session with 1800 bars' worth of minute bars, 2000
  predictions, 50 round trips and 50 hop chains (matplotlib imported beforehand), and its size
"""
from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

import numpy as np

from common.clock import NY, from_dt
from common.messages import Bar, Envelope, Fill, Heartbeat, Position, Quote, RiskEvent, RoundTrip, Signal
from services.dashboard.state import DashboardState
from services.positions.report import render_html, report_data

ROOT = Path(__file__).resolve().parents[2]
MES = "CON.F.US.MES.H26"
T0 = from_dt(datetime(2026, 11, 23, 9, 30, tzinfo=NY))
S = 1_000_000_000


def pct(xs: list[float]) -> dict[str, float]:
    a = np.asarray(xs)
    return {"median": round(float(np.median(a)), 2), "p99": round(float(np.percentile(a, 99)), 2), "n": len(xs)}


def full_state() -> DashboardState:
    st = DashboardState(MES, 5000)
    for i in range(1800):
        st.apply(Envelope(Bar(MES, 1, T0 + i * S, 24000, 24003, 23998, 24001 + i % 5, 9, 5, 4, 7, 24000, 24001),
                          i, T0, "inference"), 1.0)
    st.add_trips([RoundTrip(MES, 1, 1, "6000.00", "6001.00", T0 + i * 30 * S, T0 + (i * 30 + 20) * S, 4,
                            300 - 10 * i, 74, "target") for i in range(50)])
    for i in range(200):
        st.apply(Envelope(Fill(i, i, MES, "entry" if i % 2 == 0 else "target", i % 2, 1, 24000, 37, None,
                               T0 + i * 9 * S), i, T0, "orders"), 1.0)
    for i in range(50):
        st.apply(Envelope(Signal(f"LE{i}", "LONG_ENTRY", MES, 0.7, 24000, "v1", "model long"), i, T0, "engine"), 1.0)
        st.apply(Envelope(RiskEvent("stale_data", i % 2 == 0, detail="no quote"), i, T0, "engine"), 1.0)
    for name in ("feed", "inference", "engine", "orders", "positions"):
        st.apply(Envelope(Heartbeat(name, "ok", 1, 1.0, T0, {
            "hops_recent": [{"at_ns": T0 + i, "feed": 50.0, "broker_ack": 3000.0, "total": 4000.0} for i in range(10)]}),
            1, T0, name), 1.0)
    st.apply(Envelope(Position(MES, 1, 1, "6000.25", T0, 23990, 24012, 1, 2, 24001, 125), 1, T0, "positions"), 1.0)
    return st


def main() -> dict:
    st = full_state()
    quote = Envelope(Quote(MES, 24000, 24001, 24001, T0, T0), 1, T0, "feed")
    apply_us = []
    for _ in range(20_000):
        t = time.perf_counter_ns()
        st.apply(quote, 2.0)
        apply_us.append((time.perf_counter_ns() - t) / 1000)
    push_us, size = [], 0
    for _ in range(300):
        t = time.perf_counter_ns()
        text = json.dumps(st.view(2.0), separators=(",", ":"), default=str)
        push_us.append((time.perf_counter_ns() - t) / 1000)
        size = len(text)
    bars = [(T0 + m * 60 * S, 24000, 24010, 23990, 24000 + m % 7) for m in range(390)]
    rng = np.random.default_rng(7)
    preds = [(T0 + i * S, 1 if i % 2 else -1, float(rng.uniform(0.4, 0.9))) for i in range(2000)]
    signals = [("LONG_ENTRY", f"LE{(T0 + i * 40 * S) // S}") for i in range(50)]
    hops = [{"feed": 50.0 + i, "bar_wait": 900.0, "features": 60.0, "inference": 200.0, "signal": 1200.0,
             "command": 300.0, "order_prep": 600.0, "broker_ack": 3500.0, "total": 6810.0 + i} for i in range(50)]
    data = report_data(st.trips, day="2026-11-23", bars=bars, predictions=preds, signals=signals, hops=hops,
                       contract=MES)
    render_html(report_data([], day="2026-11-23"))          # import and warm matplotlib first
    render_s, html_bytes = [], 0
    for _ in range(3):
        t = time.perf_counter()
        html_text = render_html(data)
        render_s.append(time.perf_counter() - t)
        html_bytes = len(html_text.encode())
    out = {"apply_quote_us": pct(apply_us), "push_us": pct(push_us), "push_bytes": size,
           "report_render_s": {"median": round(float(np.median(render_s)), 3), "max": round(max(render_s), 3),
                               "n": len(render_s)},
           "report_bytes": html_bytes}
    path = ROOT / "logs" / "bench" / "dashboard.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
