"""Session report: one HTML page a person can read, with the equity curve drawn as inline SVG.

    build_report(log_dir, "2026-11-23") -> logs/report_2026-11-23.html (+ equity_2026-11-23.svg)

Reads only the session files (trades_DAY.csv, metrics_DAY.json), so `scalper report`
works after the fact, with no process running.
"""
from __future__ import annotations

import csv
import html
import json
from decimal import Decimal
from pathlib import Path

from services.positions.journal import atomic_write, metrics_path, trades_path


def _cents(text: str) -> int:
    return int((Decimal(text or "0") * 100).to_integral_value())


def _money(cents: int) -> str:
    sign = "-" if cents < 0 else "+" if cents > 0 else ""
    c = abs(cents)
    return f"{sign}${c // 100:,}.{c % 100:02d}"


def equity_svg(points: list[int], width: int = 720, height: int = 260, labels: list[str] | None = None) -> str:
    """Cumulative net P&L in cents after each round trip (starting at 0) -> an SVG line chart."""
    pad_l, pad_r, pad_t, pad_b = 70, 20, 20, 30
    pts = [0] + list(points)
    lo, hi = min(pts), max(pts)
    if lo == hi:
        lo, hi = lo - 100, hi + 100
    w, h = width - pad_l - pad_r, height - pad_t - pad_b
    n = max(1, len(pts) - 1)

    def xy(i: int, v: int) -> tuple[float, float]:
        return pad_l + w * i / n, pad_t + h * (hi - v) / (hi - lo)

    coords = [xy(i, v) for i, v in enumerate(pts)]
    path = " ".join(f"{'M' if i == 0 else 'L'}{x:.1f},{y:.1f}" for i, (x, y) in enumerate(coords))
    zero_y = xy(0, 0)[1]
    final = pts[-1]
    colour = "#1a7f37" if final >= 0 else "#cf222e"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
        f'<line x1="{pad_l}" y1="{zero_y:.1f}" x2="{width - pad_r}" y2="{zero_y:.1f}" stroke="#999" stroke-dasharray="4 3"/>',
        f'<line x1="{pad_l}" y1="{pad_t}" x2="{pad_l}" y2="{pad_t + h}" stroke="#333"/>',
        f'<line x1="{pad_l}" y1="{pad_t + h}" x2="{width - pad_r}" y2="{pad_t + h}" stroke="#333"/>',
        f'<text x="{pad_l - 6}" y="{pad_t + 4}" text-anchor="end">{html.escape(_money(hi))}</text>',
        f'<text x="{pad_l - 6}" y="{pad_t + h}" text-anchor="end">{html.escape(_money(lo))}</text>',
        f'<text x="{pad_l + w / 2:.0f}" y="{height - 8}" text-anchor="middle">round trip (1 to {len(pts) - 1})</text>',
        f'<path d="{path}" fill="none" stroke="{colour}" stroke-width="2"/>',
    ]
    if lo < 0 < hi:
        parts.append(f'<text x="{pad_l - 6}" y="{zero_y + 4:.1f}" text-anchor="end">$0</text>')
    for i, (x, y) in enumerate(coords[1:], start=1):
        tip = html.escape(labels[i - 1] if labels and i - 1 < len(labels) else _money(pts[i]))
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"><title>{tip}</title></circle>')
    parts.append("</svg>")
    return "\n".join(parts)


def build_report(log_dir: Path, day: str) -> Path:
    log_dir = Path(log_dir)
    rows: list[dict] = []
    tp = trades_path(log_dir, day)
    if tp.exists():
        with open(tp, newline="") as f:
            rows = list(csv.DictReader(f))
    metrics: dict = {}
    mp = metrics_path(log_dir, day)
    if mp.exists():
        try:
            metrics = json.loads(mp.read_text())
        except ValueError:
            metrics = {}
    pnl = [_cents(r.get("pnl_usd", "0")) for r in rows]
    equity, run = [], 0
    for p in pnl:
        run += p
        equity.append(run)
    labels = [f"#{i + 1} {r.get('side', '')} {r.get('exit_reason', '')}: {_money(p)} (total {_money(e)})"
              for i, (r, p, e) in enumerate(zip(rows, pnl, equity))]
    svg = equity_svg(equity, labels=labels)
    atomic_write(log_dir / f"equity_{day}.svg", svg + "\n")
    wins = sum(1 for p in pnl if p > 0)
    losses = sum(1 for p in pnl if p < 0)
    fees = sum(_cents(r.get("fees_usd", "0")) for r in rows)
    summary = [
        ("Round trips", str(len(rows))),
        ("Wins / losses", f"{wins} / {losses}"),
        ("Win rate", f"{100 * wins / len(rows):.1f} %" if rows else "-"),
        ("Net P&L (after fees)", _money(sum(pnl))),
        ("Fees", _money(fees).lstrip("+")),          # a cost, shown without a sign
        ("Max drawdown", _money(-int(metrics.get("max_drawdown_cents", 0) or 0))),
        ("Profit factor", "-" if metrics.get("profit_factor") is None else f"{metrics['profit_factor']:.2f}"),
        ("Average hold", f"{metrics.get('avg_hold_s', 0):.1f} s"),
    ]
    if "balance_usd" in metrics:
        summary.append(("Balance at the last write", f"${metrics['balance_usd']:,.2f}"))
    reasons = metrics.get("exit_reasons") or {}
    latency = metrics.get("latency") or {}
    cols = ["entry_time", "exit_time", "side", "size", "entry_price", "exit_price", "ticks", "pnl_usd",
            "fees_usd", "exit_reason", "signal_id"]
    esc = html.escape
    out = [
        "<!doctype html>", '<html><head><meta charset="utf-8">',
        f"<title>Session report {esc(day)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:960px}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
        "th{background:#f3f3f3}.l{text-align:left}.neg{color:#cf222e}.pos{color:#1a7f37}</style>",
        "</head><body>",
        f"<h1>Trading session {esc(day)}</h1>",
        "<h2>Summary</h2><table>",
        *[f'<tr><th class="l">{esc(k)}</th><td>{esc(v)}</td></tr>' for k, v in summary],
        "</table>",
        "<h2>Equity curve (cumulative net P&amp;L per round trip)</h2>",
        svg,
    ]
    if reasons:
        out += ["<h2>Exit reasons</h2><table>",
                *[f'<tr><th class="l">{esc(k)}</th><td>{v}</td></tr>' for k, v in sorted(reasons.items())],
                "</table>"]
    out += ["<h2>Round trips</h2>"]
    if rows:
        out += ["<table><tr>" + "".join(f"<th>{esc(c)}</th>" for c in cols) + "</tr>"]
        for r in rows:
            cls = "neg" if r.get("pnl_usd", "").startswith("-") else "pos"
            out.append("<tr>" + "".join(
                f'<td class="{cls if c == "pnl_usd" else ("l" if c in ("entry_time", "exit_time", "side", "exit_reason", "signal_id") else "")}">'
                f'{esc(str(r.get(c, "")))}</td>' for c in cols) + "</tr>")
        out.append("</table>")
    else:
        out.append("<p>No round trips this session.</p>")
    if latency:
        out += ["<h2>Latency (from the services' heartbeats)</h2><table>"]
        for svc, figs in sorted(latency.items()):
            for k, v in sorted(figs.items()):
                out.append(f'<tr><th class="l">{esc(svc)}</th><td class="l">{esc(k)}</td><td>{esc(str(v))}</td></tr>')
        out.append("</table>")
    out += shadow_section(log_dir, day)
    out.append(f"<p>Files: {esc(tp.name)}, {esc(mp.name)}, equity_{esc(day)}.svg</p></body></html>")
    path = log_dir / f"report_{day}.html"
    atomic_write(path, "\n".join(out) + "\n")
    return path


def shadow_section(log_dir: Path, day: str) -> list[str]:
    """Shadow mode (services/modelctl/shadow.py writes shadow_DAY.json): agreement and would-be P&L."""
    p = Path(log_dir) / f"shadow_{day}.json"
    try:
        s = json.loads(p.read_text())
    except (OSError, ValueError):
        return []
    a = s.get("agreement") or {}
    rows = [("Bars", a.get("bars")), ("Same call (incl. no call)", a.get("same_call_share")),
            ("Agreement when either calls", a.get("agree_when_either_calls")),
            ("Opposite calls", a.get("opposite_calls"))]
    for who, w in (s.get("would_be") or {}).items():
        rows.append((f"Would-be P&L, {who} ({w.get('version')})",
                     f"{_money(int(w.get('net_pnl_cents', 0)))} in {w.get('trades')} trades"))
    esc = html.escape
    return ["<h2>Shadow model</h2><table>",
            *[f'<tr><th class="l">{esc(k)}</th><td>{esc(str(v))}</td></tr>' for k, v in rows], "</table>"]
