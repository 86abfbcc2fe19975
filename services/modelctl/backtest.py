"""`scalper backtest`: the engine's own rules over a recording, written up like a live day.

The recording goes through the feed's FeedCore and the live InferenceWorker (bars,
features, ATR, the ONNX model). Each prediction then meets the engine's modules as in
services/engine/engine.py: `signals.generate` (entries, exits when the model turns,
reversals, maximum hold), `risk.prediction_gates`, `risk.spread_gate`, `risk.account_rules`
(daily loss, consecutive losses, ...) and `risk.plan_entry` (ATR stop, target, size), and
the session calendar (no new entries before the flatten, the flatten itself).

Fills, as the simulator gives them: a market entry at the ask (long) / bid (short) of the
book at the bar close; the bracket ends by common/brackets.bracket_exit (stop at market,
target as a limit traded through, the maximum hold at market); a signal exit or a
reversal at the book of its bar's close; fees of the traded contract from the contract
table. The trades CSV, metrics JSON and HTML report are those of a live day
(services/positions/journal.py, report.py), under logs/backtest/<day>/ by default.

The latency gates (slow features / inference) are off: they measure the machine running
the backtest. What it does not model: order latency, partial fills, queue position, rejects, outages.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

from common.brackets import BracketRule, Exit, bracket_exit, bracket_prices
from common.clock import fmt_ny
from common.instruments import instrument_for
from common.messages import Account, Bar, Prediction, Quote, RoundTrip, Trade
from common.session import SessionCalendar
from services.engine import risk as R
from services.engine.signals import ENTRIES, EXITS, REVERSALS, SignalParams, downgrade_reverse, generate, signal_id
from services.inference.dataset import NS, build_tape
from services.inference.features import FEATURE_NAMES
from services.inference.model import load_model
from services.inference.worker import InferenceWorker
from services.modelctl.data import load_source
from services.positions import journal
from services.positions.report import build_report

TRADING_PHASES = ("open", "no_new_entries")


@dataclass
class Open:
    direction: int
    size: int
    entry_ticks: int
    entry_ns: int
    stop_ticks: int
    target_ticks: int
    exit: Exit
    signal_id: str


class Backtest:
    """The decision loop; `on_prediction(pred, bar)` per 1 s bar, `finish()` at the end."""

    def __init__(self, cfg, tape, version: str, min_confidence: float | None = None):
        self.cfg = cfg
        self.tape = tape
        self.version = version
        self.contract = cfg.trading.contract
        self.inst = instrument_for(self.contract)
        self.rule = BracketRule.from_config(cfg)
        self.sp = SignalParams(cfg.model.min_confidence if min_confidence is None else min_confidence,
                               cfg.model.reverse_confidence, cfg.model.max_holding_s)
        # the latency gates measure this machine, not the market: off, so a backtest is reproducible
        self.rp = replace(R.RiskParams.from_config(cfg), max_feature_ms=float("inf"), max_inference_ms=float("inf"))
        self.session = SessionCalendar.from_config(cfg.trading)
        self.balance = self.rp.starting_capital_cents
        self.realized = 0
        self.fees = 0
        self.losses_in_row = 0
        self.halted = ""
        self.pos: Open | None = None
        self.trips: list[RoundTrip] = []
        self.blocked: dict[str, int] = {}
        self.signals = 0

    # -- positions -------------------------------------------------------
    def _close(self, ts_ns: int, price: int, reason: str) -> None:
        p = self.pos
        ticks = p.direction * (price - p.entry_ticks)
        fees = self.inst.round_trip_fee_cents * p.size
        pnl = self.inst.ticks_to_cents(ticks, p.size) - fees
        self.balance += pnl
        self.realized += pnl
        self.fees += fees
        self.losses_in_row = self.losses_in_row + 1 if pnl < 0 else 0
        self.trips.append(RoundTrip(self.contract, p.direction, p.size, str(self.inst.to_price(p.entry_ticks)),
                                    str(self.inst.to_price(price)), p.entry_ns, ts_ns, ticks, pnl, fees, reason,
                                    p.signal_id, self.version))
        self.pos = None

    def _settle(self, now: int) -> None:
        """The bracket (stop, target, maximum hold) ended before `now`: book it."""
        if self.pos is not None and self.pos.exit.ts_ns <= now and self.pos.exit.reason != "end":
            e = self.pos.exit
            self._close(e.ts_ns, e.price_ticks, e.reason)

    def _account(self, mark: int) -> tuple[Account, int]:
        unreal = 0
        if self.pos is not None:
            unreal = self.inst.ticks_to_cents(self.pos.direction * (mark - self.pos.entry_ticks), self.pos.size)
        return Account(0, self.balance, "", self.realized, unreal, self.fees, self.losses_in_row,
                       len(self.trips), self.rp.starting_capital_cents, True), unreal

    # -- the engine's decision per prediction ------------------------------
    def on_prediction(self, pred: Prediction, bar: Bar) -> None:
        now = pred.bar_start_ns + NS
        self._settle(now)
        phase = self.session.phase(now)
        if self.pos is not None and self.session.must_be_flat(now):
            self._close(now, bar.bid_ticks if self.pos.direction > 0 else bar.ask_ticks, "eod")
        acct, unreal = self._account(bar.close_ticks)
        verdict = R.account_rules(self.rp, acct, unreal)
        if verdict.flatten is not None and not self.halted:
            self.halted = f"{verdict.flatten[0]}: {verdict.flatten[1]}"
            if self.pos is not None:
                self._close(now, bar.bid_ticks if self.pos.direction > 0 else bar.ask_ticks, verdict.flatten[0])
        pos_dir = self.pos.direction if self.pos else 0
        holding = (now - self.pos.entry_ns) / NS if self.pos else 0.0
        got = generate(pred.direction, pred.confidence, pos_dir, holding, self.sp, phase in TRADING_PHASES)
        if got is None:
            return
        kind, _ = got
        plan = None
        if kind in ENTRIES or kind in REVERSALS:
            blocks = dict(verdict.blocks)
            if not self.session.entries_allowed(now):
                blocks["session"] = phase
            if self.halted:
                blocks["day_halt"] = self.halted
            blocks.update(R.prediction_gates(self.rp, pred, now))
            blocks.update(R.spread_gate(self.rp, pred.spread_ticks))
            if not blocks:
                plan = R.plan_entry(self.rp, self.inst, pred.atr_ticks, self.balance, self.realized + unreal)
                if plan.size <= 0:
                    blocks[R.SIZE_ZERO] = "size 0"
            if blocks:
                for k in blocks:
                    self.blocked[k] = self.blocked.get(k, 0) + 1
                if kind in ENTRIES:
                    return
                kind, plan = downgrade_reverse(kind), None
        self.signals += 1
        if self.pos is not None and (kind in EXITS or kind in REVERSALS):
            self._close(now, bar.bid_ticks if self.pos.direction > 0 else bar.ask_ticks,
                        "max_hold" if holding > self.sp.max_holding_s else "signal")
        if plan is not None:
            d = 1 if kind in ("LONG_ENTRY", "REVERSE_TO_LONG") else -1
            entry = bar.ask_ticks if d > 0 else bar.bid_ticks
            sp, tp = bracket_prices(entry, d, plan.stop_ticks, plan.target_ticks)
            start = self.tape.index_at(now)
            ex = bracket_exit(self.tape, start, d, sp, tp, now + int(self.sp.max_holding_s * NS), self.rule.limit_fill)
            self.pos = Open(d, plan.size, entry, now, plan.stop_ticks, plan.target_ticks, ex,
                            signal_id(kind, pred.bar_start_ns))

    def finish(self) -> None:
        if self.pos is not None:
            e = self.pos.exit
            self._close(e.ts_ns, e.price_ticks, e.reason)


def _resolve_model(cfg, model_path: str | None) -> tuple[Path, Path]:
    if model_path is None:
        return cfg.path(cfg.model.path), cfg.path(cfg.model.config)
    p = Path(model_path)
    if p.is_dir():
        return p / "model.onnx", p / "config.json"
    return p, p.with_name("config.json")


def run_backtest(cfg, recording: Path, model_path: str | None = None, out_dir: Path | None = None,
                 min_confidence: float | None = None) -> dict:
    t0 = time.perf_counter()
    onnx, mcfg = _resolve_model(cfg, model_path)
    model = load_model(onnx, mcfg, list(FEATURE_NAMES))
    src = load_source(recording, cfg.trading.contract)
    t_load = time.perf_counter()
    contract = src.contract
    tape = build_tape(src.messages, contract)
    bt = Backtest(cfg, tape, model.version, min_confidence)
    worker = InferenceWorker(model, contract, cfg.risk.atr_period, cfg.inference.max_gap_s
                             if hasattr(cfg, "inference") and hasattr(cfg.inference, "max_gap_s") else 300)
    last_bar = None
    for m in src.messages:
        outs = worker.on_trade(m.contract, m.price_ticks, m.size, m.aggressor, m.exch_ns) if isinstance(m, Trade) \
            else worker.on_quote(m.contract, m.bid_ticks, m.ask_ticks, m.exch_ns)
        for o in outs:
            if isinstance(o, Bar):
                if o.interval_s == 1:
                    last_bar = o
            elif isinstance(o, Prediction) and last_bar is not None:
                bt.on_prediction(o, last_bar)
    if len(tape):
        for o in worker.on_time(int(tape.ts_ns[-1]) + NS):
            if isinstance(o, Bar) and o.interval_s == 1:
                last_bar = o
            elif isinstance(o, Prediction) and last_bar is not None:
                bt.on_prediction(o, last_bar)
    bt.finish()
    t_run = time.perf_counter()
    day = bt.session.trading_day(int(tape.ts_ns[0])) if len(tape) else "empty"
    out = Path(out_dir) if out_dir else cfg.path(cfg.logging.dir) / "backtest" / day
    journal.write_trades_csv(out, day, bt.trips)
    extra = {"backtest": {"recording": str(recording), "sha256": src.sha256, "model_version": model.version,
                          "min_confidence": bt.sp.min_confidence, "bars": worker.stats.bars,
                          "signals": bt.signals, "entries_blocked": bt.blocked,
                          "fills": "market at bid/ask of the bar close; bracket by common/brackets.bracket_exit"},
             "balance_usd": float(journal.usd(bt.balance))}
    journal.write_metrics(out, day, journal.metrics(bt.trips, None, extra))
    report = build_report(out, day)
    t_end = time.perf_counter()
    return {"day": day, "trades": len(bt.trips), "net_pnl_usd": float(journal.usd(bt.realized)),
            "fees_usd": float(journal.usd(bt.fees)), "bars": worker.stats.bars, "report": str(report),
            "entries_blocked": bt.blocked,
            "seconds": {"load": round(t_load - t0, 2), "run": round(t_run - t_load, 2),
                        "total": round(t_end - t0, 2)},
            "bars_per_s": round(worker.stats.bars / max(1e-9, t_run - t_load), 1),
            "first_trade": fmt_ny(bt.trips[0].entry_ns) if bt.trips else None}
