"""Shadow mode, afterwards: how often the shadow model agreed with the trading one, and what
each would have made under the engine's rules.

Input: logs/shadow_<day>.csv (written by the inference worker, one line per bar with both
calls and the book) and, for P&L, the day's feed recording (logs/ticks/*_<day>.rec): each
model's calls go through the backtest's decision loop (services/modelctl/backtest.py: the
engine's signal, gate, sizing and bracket code) on that tape. Output: shadow_<day>.json,
which the session report shows.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

from common.messages import Bar, Prediction

NS = 1_000_000_000


def read_log(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def calls(rows: list[dict], who: str, min_conf: float) -> list[int]:
    """The entry call of `who` (primary or shadow) per bar: its direction when confident, else 0."""
    return [int(r[f"{who}_direction"]) if float(r[f"{who}_confidence"]) >= min_conf else 0 for r in rows]


def agreement(primary: list[int], shadow: list[int]) -> dict:
    n = len(primary)
    either = [(a, b) for a, b in zip(primary, shadow) if a or b]
    return {"bars": n,
            "same_call_share": round(sum(a == b for a, b in zip(primary, shadow)) / n, 4) if n else None,
            "bars_with_a_call": len(either),
            "agree_when_either_calls": round(sum(a == b for a, b in either) / len(either), 4) if either else None,
            "opposite_calls": sum(1 for a, b in either if a and b and a != b),
            "primary_calls": sum(1 for a in primary if a), "shadow_calls": sum(1 for b in shadow if b)}


def would_be_pnl(cfg, tape, rows: list[dict], who: str, min_conf: float) -> dict:
    """Each model's calls through the engine's rules (the backtest loop) on the day's tape."""
    from services.modelctl.backtest import Backtest
    version = rows[0][f"{who}_version"] if rows else ""
    bt = Backtest(cfg, tape, version, min_conf)
    for r in rows:
        start = int(r["bar_start_ns"])
        bid, ask, close = int(r["bid_ticks"]), int(r["ask_ticks"]), int(r["close_ticks"])
        in_range = r[f"{who}_in_range"] == "1"
        pred = Prediction(r["contract"], start, int(r[f"{who}_direction"]), float(r[f"{who}_confidence"]), [],
                          version, close, float(r["atr_ticks"]), ask - bid if bid and ask else 0, 0.0, 0.0,
                          in_range, [] if in_range else ["range"])
        bt.on_prediction(pred, Bar(r["contract"], 1, start, close, close, close, close, 0, 0, 0, 0, bid, ask))
    bt.finish()
    return {"version": version, "trades": len(bt.trips), "net_pnl_cents": sum(t.pnl_cents for t in bt.trips),
            "fees_cents": sum(t.fees_cents for t in bt.trips),
            "wins": sum(1 for t in bt.trips if t.pnl_cents > 0)}


def summarize(cfg, log_dir: Path, day: str) -> Path | None:
    """Write shadow_<day>.json next to the session files; None when there was no shadow that day."""
    log_dir = Path(log_dir)
    path = log_dir / f"shadow_{day}.csv"
    if not path.is_file():
        return None
    rows = read_log(path)
    min_conf = cfg.model.min_confidence
    out = {"day": day, "min_confidence": min_conf,
           "agreement": agreement(calls(rows, "primary", min_conf), calls(rows, "shadow", min_conf))}
    recs = sorted((log_dir / "ticks").glob(f"*_{day}.rec"))
    if recs and rows:
        from services.inference.dataset import build_tape
        from services.modelctl.data import load_source
        src = load_source(recs[0], cfg.trading.contract)
        tape = build_tape(src.messages, src.contract)
        out["recording"] = recs[0].name
        out["would_be"] = {who: would_be_pnl(cfg, tape, rows, who, min_conf) for who in ("primary", "shadow")}
    else:
        out["would_be"] = None
        out["note"] = "no recording of the day under logs/ticks/: agreement only"
    dest = log_dir / f"shadow_{day}.json"
    dest.write_text(json.dumps(out, indent=2) + "\n")
    return dest


def main(argv: list[str] | None = None) -> int:
    """`python -m services.modelctl.shadow [--config C] [--day D]`: write shadow_DAY.json when the
    day had a shadow model, and print its path (`scalper report` runs this before the report)."""
    import time

    from common.service import tool_config
    cfg, args = tool_config("python -m services.modelctl.shadow", "summarise the shadow model", argv,
                            lambda ap: ap.add_argument("--day", default=None, help="YYYY-MM-DD (default today)"))
    path = summarize(cfg, cfg.path(cfg.logging.dir), args.day or time.strftime("%Y-%m-%d"))
    if path is not None:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
