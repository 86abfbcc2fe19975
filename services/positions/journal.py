"""Session files: trades_YYYY-MM-DD.csv, metrics_YYYY-MM-DD.json and the persisted ledger state.

Every file is written whole to a temporary file and moved into place with os.replace,
so a kill -9 leaves either the old or the new version, never half of one.
"""
from __future__ import annotations

import csv
import io
import json
import os
from fractions import Fraction
from pathlib import Path
from typing import Any

from common.clock import fmt_ny
from common.messages import RoundTrip

CSV_COLUMNS = ["entry_time", "exit_time", "contract", "side", "size", "entry_price", "exit_price", "ticks",
               "pnl_usd", "fees_usd", "gross_usd", "exit_reason", "hold_s", "signal_id", "model_version"]


def usd(cents: int) -> str:
    """-374 -> '-3.74' (no float on the way)."""
    sign = "-" if cents < 0 else ""
    c = abs(int(cents))
    return f"{sign}{c // 100}.{c % 100:02d}"


def atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def trades_path(log_dir: Path, day: str) -> Path:
    return Path(log_dir) / f"trades_{day}.csv"


def metrics_path(log_dir: Path, day: str) -> Path:
    return Path(log_dir) / f"metrics_{day}.json"


def trip_row(t: RoundTrip) -> dict[str, Any]:
    return {
        "entry_time": fmt_ny(t.entry_ns) if t.entry_ns else "",
        "exit_time": fmt_ny(t.exit_ns) if t.exit_ns else "",
        "contract": t.contract,
        "side": "LONG" if t.direction > 0 else "SHORT",
        "size": t.size,
        "entry_price": t.entry_price,
        "exit_price": t.exit_price,
        "ticks": t.ticks,
        "pnl_usd": usd(t.pnl_cents),
        "fees_usd": usd(t.fees_cents),
        "gross_usd": usd(t.pnl_cents + t.fees_cents),
        "exit_reason": t.exit_reason,
        "hold_s": f"{max(0, t.exit_ns - t.entry_ns) / 1e9:.3f}" if t.entry_ns else "",
        "signal_id": t.signal_id,
        "model_version": t.model_version,
    }


def write_trades_csv(log_dir: Path, day: str, trips: list[RoundTrip]) -> Path:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    w.writeheader()
    for t in trips:
        w.writerow(trip_row(t))
    path = trades_path(log_dir, day)
    atomic_write(path, buf.getvalue())
    return path


def metrics(trips: list[RoundTrip], latency: dict[str, dict] | None = None, extra: dict | None = None) -> dict:
    n = len(trips)
    wins = [t for t in trips if t.pnl_cents > 0]
    losses = [t for t in trips if t.pnl_cents < 0]
    net = sum(t.pnl_cents for t in trips)
    fees = sum(t.fees_cents for t in trips)
    won = sum(t.pnl_cents for t in wins)
    lost = -sum(t.pnl_cents for t in losses)
    equity = peak = dd = 0
    for t in trips:
        equity += t.pnl_cents
        peak = max(peak, equity)
        dd = max(dd, peak - equity)
    holds = [(t.exit_ns - t.entry_ns) / 1e9 for t in trips if t.entry_ns and t.exit_ns >= t.entry_ns]
    out = {
        "trades": n,
        "wins": len(wins),
        "losses": len(losses),
        "win_rate": round(len(wins) / n, 4) if n else 0.0,
        "net_pnl_usd": float(usd(net)),
        "gross_pnl_usd": float(usd(net + fees)),
        "fees_usd": float(usd(fees)),
        "net_pnl_cents": net,
        "gross_pnl_cents": net + fees,
        "fees_cents": fees,
        "max_drawdown_usd": float(usd(dd)),
        "max_drawdown_cents": dd,
        "profit_factor": round(float(Fraction(won, lost)), 4) if lost else None,
        "avg_win_usd": float(usd(won // len(wins))) if wins else 0.0,
        "avg_loss_usd": float(usd(-(lost // len(losses)))) if losses else 0.0,
        "avg_hold_s": round(sum(holds) / len(holds), 3) if holds else 0.0,
        "largest_win_usd": float(usd(max((t.pnl_cents for t in wins), default=0))),
        "largest_loss_usd": float(usd(min((t.pnl_cents for t in losses), default=0))),
        "exit_reasons": _count(t.exit_reason for t in trips),
        "latency": latency or {},
    }
    if extra:
        out.update(extra)
    return out


def _count(items) -> dict[str, int]:
    out: dict[str, int] = {}
    for i in items:
        out[i] = out.get(i, 0) + 1
    return out


def write_metrics(log_dir: Path, day: str, data: dict) -> Path:
    path = metrics_path(log_dir, day)
    atomic_write(path, json.dumps(data, indent=2, sort_keys=False) + "\n")
    return path


# -- ledger state ------------------------------------------------------------

def state_path(log_dir: Path) -> Path:
    return Path(log_dir) / "state" / "positions.json"


def save_state(log_dir: Path, data: dict) -> Path:
    path = state_path(log_dir)
    atomic_write(path, json.dumps(data, separators=(",", ":")))
    return path


def load_state(log_dir: Path) -> dict | None:
    path = state_path(log_dir)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
