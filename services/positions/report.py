"""Session report: one self-contained HTML file a trader reads in a browser, offline.

    build_report(log_dir, "2026-11-23") -> logs/report_2026-11-23.html

Three steps, so a backtest can draw the same report from its own results:

    load_session(log_dir, day) -> ReportData       the files (the only I/O)
    report_data(trips, day=..., bars=..., ...)      pure: what the report is drawn from
    render_html(data) -> str                        pure: the page, charts inlined as SVG

Charts are drawn by matplotlib and inlined as SVG (text kept as text): a day's report is a
few hundred kB and needs no script. Plotly would inline about 3.5 MB of JavaScript per file.

Inputs: trades_DAY.csv and metrics_DAY.json (the keeper) and, when the dashboard ran,
session_DAY.jsonl (one-minute bars, directional predictions, signals, each entry's hops).
A chart whose input is missing says so instead of being left out.
"""
from __future__ import annotations

import csv
import html
import io
import json
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Iterable

from common.clock import NY, to_ny
from common.hops import SEGMENTS
from common.instruments import instrument_for
from common.messages import RoundTrip
from services.positions.journal import atomic_write, metrics_path, trades_path

HOP_ORDER = list(SEGMENTS.values())
ENTRY_KINDS = ("LONG_ENTRY", "SHORT_ENTRY", "REVERSE_TO_LONG", "REVERSE_TO_SHORT")


@dataclass
class ReportData:
    day: str
    trips: list[RoundTrip]
    bars: list[tuple[int, int, int, int, int]] = field(default_factory=list)   # one-minute (ns, o, h, l, c) ticks
    confidence_taken: list[float] = field(default_factory=list)
    confidence_skipped: list[float] = field(default_factory=list)
    hops: list[dict[str, float]] = field(default_factory=list)                 # per entry: segment -> us
    metrics: dict = field(default_factory=dict)
    contract: str = ""
    shadow: dict = field(default_factory=dict)      # shadow_DAY.json (services/modelctl/shadow.py), if any


# --------------------------------------------------------------------------
# data: pure
# --------------------------------------------------------------------------

def report_data(trips: Iterable[RoundTrip], *, day: str, bars: Iterable[tuple[int, int, int, int, int]] = (),
                predictions: Iterable[tuple[int, int, float]] = (), signals: Iterable[tuple[str, str]] = (),
                hops: Iterable[dict[str, float]] = (), metrics: dict | None = None,
                contract: str = "") -> ReportData:
    """Everything the report draws. `predictions`: (bar start ns, direction, confidence) for
    every directional prediction; `signals`: (kind, signal id) of the engine's signals. A
    prediction was taken when an entry signal was decided on its bar (ids end in the bar's
    start second)."""
    trips = sorted(trips, key=lambda t: t.exit_ns)
    taken_s = {int(sid.lstrip("ABCDEFGHIJKLMNOPQRSTUVWXYZ_")) for kind, sid in signals
               if kind in ENTRY_KINDS and sid.lstrip("ABCDEFGHIJKLMNOPQRSTUVWXYZ_").isdigit()}
    taken, skipped = [], []
    for ns, direction, conf in predictions:
        if direction:
            (taken if ns // 10**9 in taken_s else skipped).append(float(conf))
    contract = contract or (trips[0].contract if trips else "")
    return ReportData(day, trips, sorted(bars), taken, skipped, [dict(h) for h in hops], dict(metrics or {}), contract)


def equity_points(trips: list[RoundTrip]) -> list[tuple[int, int]]:
    """(time ns, cumulative net cents): 0 at the first entry, then one point per exit."""
    if not trips:
        return []
    pts = [(trips[0].entry_ns or trips[0].exit_ns, 0)]
    run = 0
    for t in trips:
        run += t.pnl_cents
        pts.append((t.exit_ns, run))
    return pts


def drawdown(points: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """(time ns, cents below the running peak, <= 0)."""
    peak, out = 0, []
    for ns, v in points:
        peak = max(peak, v)
        out.append((ns, v - peak))
    return out


def pnl_by(trips: list[RoundTrip], key) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for t in trips:
        out[key(t)] += t.pnl_cents
    return dict(sorted(out.items()))


def hop_medians(data: ReportData) -> dict[str, tuple[float, float]]:
    """segment -> (median us, p99 us), from the entries' chains, else from the metrics."""
    if data.hops:
        out = {}
        for seg in HOP_ORDER:
            xs = sorted(h[seg] for h in data.hops if isinstance(h.get(seg), (int, float)))
            if xs:
                out[seg] = (statistics.median(xs), xs[min(len(xs) - 1, int(0.99 * len(xs)))])
        return out
    figs = (data.metrics.get("latency") or {}).get("orders") or {}
    return {seg: (figs[f"hop_{seg}_us_p50"], figs.get(f"hop_{seg}_us_p99", figs[f"hop_{seg}_us_p50"]))
            for seg in HOP_ORDER if f"hop_{seg}_us_p50" in figs}


# --------------------------------------------------------------------------
# files: the I/O edge
# --------------------------------------------------------------------------

def _cents(text: str) -> int:
    return int((Decimal(text or "0") * 100).to_integral_value())


def _ns(text: str) -> int:
    if not text:
        return 0
    dt = datetime.strptime(text, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=NY)
    return int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1000


def trips_from_csv(path: Path) -> list[RoundTrip]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [RoundTrip(contract=r.get("contract", ""), direction=1 if r.get("side") == "LONG" else -1,
                      size=int(r.get("size") or 0), entry_price=r.get("entry_price", ""),
                      exit_price=r.get("exit_price", ""), entry_ns=_ns(r.get("entry_time", "")),
                      exit_ns=_ns(r.get("exit_time", "")), ticks=int(r.get("ticks") or 0),
                      pnl_cents=_cents(r.get("pnl_usd", "0")), fees_cents=_cents(r.get("fees_usd", "0")),
                      exit_reason=r.get("exit_reason", ""), signal_id=r.get("signal_id", ""),
                      model_version=r.get("model_version", ""))
            for r in rows]


def load_session(log_dir: Path, day: str) -> ReportData:
    log_dir = Path(log_dir)
    metrics: dict = {}
    try:
        metrics = json.loads(metrics_path(log_dir, day).read_text())
    except (OSError, ValueError):
        pass
    bars, preds, signals, hops = [], [], [], []
    contract = ""
    try:
        with open(log_dir / f"session_{day}.jsonl", encoding="utf-8") as f:
            for line in f:
                try:
                    r = json.loads(line)
                except ValueError:
                    continue                      # a line cut short by a crash
                t = r.pop("t", None)
                if t == "meta":
                    contract = r.get("contract") or contract
                elif t == "bar":
                    bars.append((r["ns"], r["o"], r["h"], r["l"], r["c"]))
                elif t == "pred":
                    preds.append((r["ns"], r["dir"], r["conf"]))
                elif t == "signal":
                    signals.append((r["kind"], r["id"]))
                elif t == "hops":
                    r.pop("ns", None)
                    hops.append(r)
    except OSError:
        pass
    bars = sorted({b[0]: b for b in bars}.values())
    data = report_data(trips_from_csv(trades_path(log_dir, day)), day=day, bars=bars, predictions=preds,
                       signals=signals, hops=hops, metrics=metrics, contract=contract)
    try:
        data.shadow = json.loads((log_dir / f"shadow_{day}.json").read_text())
    except (OSError, ValueError):
        pass
    return data


def build_report(log_dir: Path, day: str) -> Path:
    return write_report(log_dir, load_session(log_dir, day))


def write_report(log_dir: Path, data: ReportData) -> Path:
    """report_DAY.html from data a caller built (a backtest: report_data(...) from its own run)."""
    path = Path(log_dir) / f"report_{data.day}.html"
    atomic_write(path, render_html(data))
    return path


# --------------------------------------------------------------------------
# rendering: pure (matplotlib -> inline SVG)
# --------------------------------------------------------------------------

GREEN, RED, BLUE, GREY = "#1a7f37", "#cf222e", "#0969da", "#8c959f"


def _money(cents: int | float, sign: bool = True) -> str:
    cents = int(round(cents))
    s = "-" if cents < 0 else ("+" if sign and cents > 0 else "")
    c = abs(cents)
    return f"{s}${c // 100:,}.{c % 100:02d}"


def _dt(ns: int) -> datetime:
    return to_ny(ns).replace(tzinfo=None)      # matplotlib dates in New York wall time


def _svg(fig) -> str:
    import matplotlib.pyplot as plt
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight",
                metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]           # drop the XML prolog and doctype: inline in HTML


def _figure(w: float, h: float):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    plt.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "scalper", "font.size": 9,
                         "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True,
                         "grid.color": "#e6e6e6", "grid.linewidth": 0.6})
    return plt


def _time_axis(ax, span_ns: int = 0) -> None:
    """New York wall time; seconds shown when the span is short (a drill, a replay)."""
    import matplotlib.dates as mdates
    ax.xaxis.set_major_locator(mdates.AutoDateLocator(minticks=4, maxticks=9))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S" if span_ns < 20 * 60 * 10**9 else "%H:%M"))
    ax.set_xlabel("New York time")


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color=GREY)
    ax.set_xticks([])
    ax.set_yticks([])


def chart_equity(data: ReportData) -> str:
    plt = _figure(9, 4)
    fig, (ax, dd_ax) = plt.subplots(2, 1, figsize=(9, 3.6), sharex=True, gridspec_kw={"height_ratios": [3, 1.2]})
    pts = equity_points(data.trips)
    if not pts:
        _empty(ax, "no round trip this session")
        _empty(dd_ax, "")
        return _svg(fig)
    xs = [_dt(ns) for ns, _ in pts]
    ys = [v / 100 for _, v in pts]
    ax.step(xs, ys, where="post", color=GREEN if ys[-1] >= 0 else RED, lw=1.8)
    ax.axhline(0, color=GREY, lw=0.8, ls="--")
    ax.set_ylabel("net P&L, $")
    dd = drawdown(pts)
    dd_ax.fill_between([_dt(ns) for ns, _ in dd], [v / 100 for _, v in dd], step="post", color=RED, alpha=0.35)
    dd_ax.set_ylabel("drawdown, $")
    _time_axis(dd_ax, pts[-1][0] - pts[0][0])
    fig.align_ylabels()
    return _svg(fig)


def symbol_of(contract: str) -> str:
    """'CON.F.US.MES.H26' -> 'MES'; a bare symbol ('MES', a backtest's) stays as it is."""
    parts = (contract or "").split(".")
    return parts[-2] if len(parts) >= 2 else parts[0]


def chart_price(data: ReportData) -> str:
    plt = _figure(9, 3.6)
    fig, ax = plt.subplots(figsize=(9, 3.6))
    inst = instrument_for(data.contract) if data.contract else None
    tick = float(inst.tick_size) if inst else 0.25
    if data.bars:
        xs = [_dt(b[0]) for b in data.bars]
        ax.fill_between(xs, [b[3] * tick for b in data.bars], [b[2] * tick for b in data.bars],
                        color=BLUE, alpha=0.15, lw=0, step="post", label="one-minute range")
        ax.step(xs, [b[4] * tick for b in data.bars], where="post", color=BLUE, lw=1, label="close")
    elif not data.trips:
        _empty(ax, "no price recorded (the dashboard records it) and no trade")
        return _svg(fig)
    for t in data.trips:
        if not t.entry_ns:
            continue
        colour = GREEN if t.pnl_cents >= 0 else RED
        e, x = float(t.entry_price), float(t.exit_price)
        ax.plot([_dt(t.entry_ns), _dt(t.exit_ns)], [e, x], color=colour, lw=1, alpha=0.7)
        ax.scatter([_dt(t.entry_ns)], [e], marker="^" if t.direction > 0 else "v", color=colour, s=36, zorder=3)
        ax.scatter([_dt(t.exit_ns)], [x], marker="x", color=colour, s=30, zorder=3)
    from matplotlib.lines import Line2D
    handles = [Line2D([], [], marker="^", ls="", color=GREY, label="long entry"),
               Line2D([], [], marker="v", ls="", color=GREY, label="short entry"),
               Line2D([], [], marker="x", ls="", color=GREY, label="exit"),
               Line2D([], [], color=GREEN, label="won"), Line2D([], [], color=RED, label="lost")]
    if data.bars:
        handles.insert(0, Line2D([], [], color=BLUE, label=f"{symbol_of(data.contract)} close"))
    ax.legend(handles=handles, loc="upper left", fontsize=8, ncol=6, frameon=False)
    ax.set_ylabel("price")
    times = [b[0] for b in data.bars] + [t.entry_ns for t in data.trips if t.entry_ns] + [t.exit_ns for t in data.trips]
    _time_axis(ax, max(times) - min(times))
    return _svg(fig)


def _bars(title: str, values: dict[str, int], xlabel: str) -> str:
    plt = _figure(4.4, 3)
    fig, ax = plt.subplots(figsize=(4.4, 3))
    if not values:
        _empty(ax, "no round trip this session")
        return _svg(fig)
    keys = list(values)
    ys = [values[k] / 100 for k in keys]
    ax.bar(keys, ys, color=[GREEN if y >= 0 else RED for y in ys])
    ax.axhline(0, color=GREY, lw=0.8)
    ax.margins(y=0.18)                          # room for the labels above and below the bars
    for i, y in enumerate(ys):
        ax.annotate(_money(y * 100), (i, y), ha="center", va="bottom" if y >= 0 else "top", fontsize=8,
                    xytext=(0, 2 if y >= 0 else -2), textcoords="offset points")
    ax.set_ylabel("net P&L, $")
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    return _svg(fig)


def chart_pnl_hour(data: ReportData) -> str:
    return _bars("P&L by hour of exit", pnl_by(data.trips, lambda t: f"{to_ny(t.exit_ns).hour:02d}:00"), "hour (New York)")


def chart_pnl_reason(data: ReportData) -> str:
    return _bars("P&L by exit reason", pnl_by(data.trips, lambda t: t.exit_reason or "?"), "exit reason")


def chart_confidence(data: ReportData) -> str:
    plt = _figure(4.4, 3)
    fig, ax = plt.subplots(figsize=(4.4, 3))
    if not data.confidence_taken and not data.confidence_skipped:
        _empty(ax, "no predictions recorded (the dashboard records them)")
        return _svg(fig)
    lo = min(data.confidence_taken + data.confidence_skipped)
    bins = [lo + (1 - lo) * i / 20 for i in range(21)]
    ax.hist(data.confidence_skipped, bins=bins, color=GREY, alpha=0.7, label=f"skipped ({len(data.confidence_skipped)})",
            density=True)
    if data.confidence_taken:
        ax.hist(data.confidence_taken, bins=bins, color=BLUE, alpha=0.7, label=f"taken ({len(data.confidence_taken)})",
                density=True)
    ax.set_xlabel("model confidence")
    ax.set_ylabel("share (density)")
    ax.set_title("Directional predictions: taken vs skipped", fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    return _svg(fig)


def chart_latency(data: ReportData) -> str:
    plt = _figure(4.4, 3)
    fig, ax = plt.subplots(figsize=(4.4, 3))
    hops = hop_medians(data)
    if not hops:
        _empty(ax, "no entry's hops recorded")
        return _svg(fig)
    names = list(hops)
    start = 0.0
    for i, name in enumerate(names):
        med, p99 = hops[name]
        ax.barh(i, med / 1000, left=start / 1000, color=BLUE, height=0.6)
        ax.plot([(start + med) / 1000, (start + p99) / 1000], [i, i], color=GREY, lw=1)
        ax.annotate(f"{med / 1000:.2f}", ((start + med) / 1000, i), xytext=(3, -3), textcoords="offset points",
                    fontsize=7)
        start += med
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlabel("ms from the tick (median; grey: to p99)")
    n = len(data.hops) or "?"
    ax.set_title(f"Tick to broker ack, per hop ({n} entries)", fontsize=10)
    return _svg(fig)


def _summary(data: ReportData) -> list[tuple[str, str]]:
    pnl = [t.pnl_cents for t in data.trips]
    wins = sum(1 for p in pnl if p > 0)
    losses = sum(1 for p in pnl if p < 0)
    pts = equity_points(data.trips)
    max_dd = -min((v for _, v in drawdown(pts)), default=0)
    won, lost = sum(p for p in pnl if p > 0), -sum(p for p in pnl if p < 0)
    holds = [(t.exit_ns - t.entry_ns) / 1e9 for t in data.trips if t.entry_ns and t.exit_ns >= t.entry_ns]
    out = [("Net P&L", _money(sum(pnl))), ("Round trips", str(len(pnl))), ("Wins / losses", f"{wins} / {losses}"),
           ("Win rate", f"{100 * wins / len(pnl):.0f} %" if pnl else "-"),
           ("Fees", _money(sum(t.fees_cents for t in data.trips), sign=False)),
           ("Max drawdown", _money(-max_dd) if max_dd else "$0.00"),
           ("Profit factor", f"{won / lost:.2f}" if lost else "-"),
           ("Average hold", f"{sum(holds) / len(holds):.0f} s" if holds else "-")]
    if "balance_usd" in data.metrics:
        out.append(("Balance", f"${data.metrics['balance_usd']:,.2f}"))
    return out


CSS = """
body{font-family:system-ui,sans-serif;margin:0 auto;padding:16px 20px;max-width:1240px;color:#1f2328}
h1{font-size:20px;margin:0 0 10px} h2{font-size:14px;margin:18px 0 6px;color:#57606a;text-transform:uppercase;letter-spacing:.05em}
.cards{display:flex;flex-wrap:wrap;gap:8px}.card{border:1px solid #d0d7de;border-radius:6px;padding:6px 12px;min-width:110px}
.card b{display:block;font-size:18px}.card span{color:#57606a;font-size:12px}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:10px}
figure{margin:0;border:1px solid #d0d7de;border-radius:6px;padding:6px;min-width:0}
figure svg{width:100%;height:auto;display:block}
figcaption{font-size:12px;color:#57606a}
table{border-collapse:collapse;width:100%;font-size:12px}
td,th{border-bottom:1px solid #d8dee4;padding:2px 6px;text-align:right;white-space:nowrap}
th{background:#f6f8fa;position:sticky;top:0} .l{text-align:left}
.neg{color:#cf222e}.pos{color:#1a7f37}
.scroll{max-height:520px;overflow:auto;border:1px solid #d0d7de;border-radius:6px}
"""


def _table(data: ReportData) -> str:
    if not data.trips:
        return "<p>No round trips this session.</p>"
    esc = html.escape
    head = ("<table id='trades'><thead><tr><th>#</th><th class='l'>entry</th><th class='l'>exit</th><th class='l'>side</th>"
            "<th>size</th><th>entry price</th><th>exit price</th><th>ticks</th><th>net</th><th>fees</th>"
            "<th>hold</th><th class='l'>exit reason</th><th class='l'>signal</th></tr></thead><tbody>")
    rows = []
    for i, t in enumerate(data.trips, 1):
        hold = f"{(t.exit_ns - t.entry_ns) / 1e9:.0f} s" if t.entry_ns else "-"
        cls = "pos" if t.pnl_cents > 0 else "neg" if t.pnl_cents < 0 else ""
        rows.append(
            f"<tr><td>{i}</td><td class='l'>{to_ny(t.entry_ns):%H:%M:%S}</td><td class='l'>{to_ny(t.exit_ns):%H:%M:%S}</td>"
            f"<td class='l'>{'LONG' if t.direction > 0 else 'SHORT'}</td><td>{t.size}</td><td>{esc(t.entry_price)}</td>"
            f"<td>{esc(t.exit_price)}</td><td>{t.ticks}</td><td class='{cls}'>{_money(t.pnl_cents)}</td>"
            f"<td>{_money(t.fees_cents, sign=False)}</td><td>{hold}</td><td class='l'>{esc(t.exit_reason)}</td>"
            f"<td class='l'>{esc(t.signal_id)}</td></tr>")
    return head + "".join(rows) + "</tbody></table>"


def render_html(data: ReportData) -> str:
    esc = html.escape

    def fig(name: str, svg: str, caption: str) -> str:
        return f"<figure data-chart='{name}'>{svg}<figcaption>{esc(caption)}</figcaption></figure>"

    cards = "".join(f"<div class='card'><b>{esc(v)}</b><span>{esc(k)}</span></div>" for k, v in _summary(data))
    title = f"Trading session {data.day}" + (f" · {data.contract}" if data.contract else "")
    parts = [
        "<!doctype html>", "<html lang='en'><head><meta charset='utf-8'>",
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1><div class='cards'>{cards}</div>",
        "<h2>Equity and drawdown</h2>",
        fig("equity", chart_equity(data), "Cumulative net P&L (after fees) at each exit, and how far below its peak."),
        "<h2>Price and trades</h2>",
        fig("price", chart_price(data), "Triangles: entries (up long, down short); crosses: exits; green won, red lost."),
        "<h2>Where the P&amp;L came from</h2><div class='grid'>",
        fig("pnl_hour", chart_pnl_hour(data), "Net P&L of the round trips closed in each hour."),
        fig("pnl_reason", chart_pnl_reason(data), "Net P&L by exit reason."),
        fig("confidence", chart_confidence(data),
            "Confidence of every directional prediction; taken ones led to an entry signal."),
        fig("latency", chart_latency(data), "Median time in each hop from the tick to the broker's ack, stacked."),
        "</div>",
        f"<h2>Round trips ({len(data.trips)})</h2><div class='scroll'>{_table(data)}</div>",
        *shadow_section(data.shadow),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def shadow_section(s: dict) -> list[str]:
    """Shadow mode (services/modelctl/shadow.py writes shadow_DAY.json): agreement and would-be P&L."""
    if not s:
        return []
    a = s.get("agreement") or {}
    rows = [("Bars", a.get("bars")), ("Same call (incl. no call)", a.get("same_call_share")),
            ("Agreement when either calls", a.get("agree_when_either_calls")),
            ("Opposite calls", a.get("opposite_calls"))]
    for who, w in (s.get("would_be") or {}).items():
        rows.append((f"Would-be P&L, {who} ({w.get('version')})",
                     f"{_money(int(w.get('net_pnl_cents', 0)))} in {w.get('trades')} trades"))
    esc = html.escape
    return ["<h2>Shadow model</h2><table class='shadow'>",
            *[f"<tr><th class='l'>{esc(k)}</th><td>{esc(str(v))}</td></tr>" for k, v in rows], "</table>"]


def main(argv: list[str] | None = None) -> int:
    """`python -m services.positions.report [--config C] [--day D]`: write the report from the
    day's trades CSV and metrics JSON and print its path (`scalper report` runs this)."""
    import time

    from common.service import tool_config
    cfg, args = tool_config("python -m services.positions.report", "write the session report", argv,
                            lambda ap: ap.add_argument("--day", default=None, help="YYYY-MM-DD (default today)"))
    print(build_report(cfg.path(cfg.logging.dir), args.day or time.strftime("%Y-%m-%d")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
