"""Ticks in, bars and predictions out: the worker's logic without sockets.

Used as is by the process loop (__main__), the replay test and the benchmark. For
each closed 1-second bar it updates the incremental features, scores the model and
returns a Prediction; closed 1-minute bars update the Wilder ATR carried in every
Prediction (`atr_ticks`, in ticks, 0.0 until `atr_period` minutes are in).

A prediction is made for every 1-second bar, also during the feature warm-up; those
carry features_in_range=False and "warmup" among out_of_range, so the engine can
ignore them. After a session break (bar starts not contiguous) features restart.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from common.messages import Bar, Prediction, ShadowPrediction, encode
from services.inference.bars import BarAggregator
from services.inference.features import FeatureEngine, WilderATR
from services.inference.model import LoadedModel

WARMUP_FLAG = "warmup"


@dataclass
class WorkerStats:
    trades: int = 0
    quotes: int = 0
    other_contract: int = 0
    bars: int = 0
    minute_bars: int = 0
    predictions: int = 0
    out_of_range: int = 0
    resets: int = 0
    last_feature_us: float = 0.0
    last_inference_us: float = 0.0
    max_feature_us: float = 0.0
    max_inference_us: float = 0.0
    extra: dict = field(default_factory=dict)


class BarFeatures:
    """Ticks -> closed 1 s bars, each with its feature vector, and the 1-minute Wilder ATR.

    The part of the worker that training and the backtest reuse as is, so a model is
    trained on exactly the numbers it is served live. `on_*` return (second bars,
    minute bars) closed by the tick; the ATR has already taken the minute bars.
    """

    def __init__(self, contract: str, atr_period: int = 14, max_gap_s: int = 300, minute_bars: bool = True):
        self.contract = contract
        self.seconds = BarAggregator(contract, 1, max_gap_s)
        self.minutes = BarAggregator(contract, 60, max_gap_s) if minute_bars else None
        self.features = FeatureEngine()
        self.atr = WilderATR(atr_period)
        self.last_start_ns: int | None = None
        self.resets = 0
        self.minute_count = 0

    def on_trade(self, price_ticks: int, size: int, aggressor: int, exch_ns: int) -> tuple[list[Bar], list[Bar]]:
        mins = self.minutes.on_trade(price_ticks, size, aggressor, exch_ns) if self.minutes else []
        return self.seconds.on_trade(price_ticks, size, aggressor, exch_ns), self._minutes(mins)

    def on_quote(self, bid_ticks: int, ask_ticks: int, exch_ns: int) -> tuple[list[Bar], list[Bar]]:
        mins = self.minutes.on_quote(bid_ticks, ask_ticks, exch_ns) if self.minutes else []
        return self.seconds.on_quote(bid_ticks, ask_ticks, exch_ns), self._minutes(mins)

    def on_time(self, exch_ns: int) -> tuple[list[Bar], list[Bar]]:
        mins = self.minutes.on_time(exch_ns) if self.minutes else []
        return self.seconds.on_time(exch_ns), self._minutes(mins)

    def _minutes(self, bars: list[Bar]) -> list[Bar]:
        for bar in bars:
            self.atr.update(bar)
            self.minute_count += 1
        return bars

    def update(self, bar: Bar):
        """The feature vector of a closed 1 s bar (a reused array); windows restart after a gap."""
        if self.last_start_ns is not None and bar.start_ns != self.last_start_ns + 1_000_000_000:
            self.features.reset()
            self.resets += 1
        self.last_start_ns = bar.start_ns
        return self.features.update(bar)

    @property
    def warm(self) -> bool:
        return self.features.warm


class InferenceWorker:
    def __init__(self, model: LoadedModel, contract: str, atr_period: int = 14, max_gap_s: int = 300,
                 minute_bars: bool = True, shadow: LoadedModel | None = None):
        self.model = model
        self.shadow = shadow          # scored on the same features after every prediction; never traded
        self.contract = contract
        self.bf = BarFeatures(contract, atr_period, max_gap_s, minute_bars)
        self.seconds, self.minutes, self.atr = self.bf.seconds, self.bf.minutes, self.bf.atr
        self.classes = list(model.classes)
        self.stats = WorkerStats()
        self.exch_ns = 0
        self._last_bar: Bar | None = None
        self._scratch = FeatureEngine()      # warm_up's own windows: the live ones are never touched

    # -- inputs ------------------------------------------------------------
    def on_trade(self, contract: str, price_ticks: int, size: int, aggressor: int, exch_ns: int) -> list:
        if contract != self.contract:
            self.stats.other_contract += 1
            return []
        self.stats.trades += 1
        self.exch_ns = max(self.exch_ns, exch_ns)
        return self._closed(*self.bf.on_trade(price_ticks, size, aggressor, exch_ns))

    def on_quote(self, contract: str, bid_ticks: int, ask_ticks: int, exch_ns: int) -> list:
        if contract != self.contract:
            self.stats.other_contract += 1
            return []
        self.stats.quotes += 1
        self.exch_ns = max(self.exch_ns, exch_ns)
        return self._closed(*self.bf.on_quote(bid_ticks, ask_ticks, exch_ns))

    def on_time(self, exch_ns: int) -> list:
        """Feed heartbeat: exchange time reached exch_ns; closes bars whose interval is over."""
        if exch_ns <= 0:
            return []
        self.exch_ns = max(self.exch_ns, exch_ns)
        return self._closed(*self.bf.on_time(exch_ns))

    @property
    def late_ticks(self) -> int:
        return self.seconds.late_ticks

    # -- per bar -----------------------------------------------------------
    def _closed(self, seconds: list[Bar], minutes: list[Bar]) -> list:
        if not seconds and not minutes:
            return []
        out: list = []
        for bar in minutes:
            self.stats.minute_bars += 1
            out.append(bar)
        for bar in seconds:
            out.append(bar)
            pred = self.predict(bar)
            out.append(pred)
            if self.shadow is not None:
                out.append(self.shadow_predict(bar, pred))
        return out

    def shadow_predict(self, bar: Bar, pred: Prediction) -> ShadowPrediction:
        """The shadow model on the raw features the trading model just scored (after it, so the
        trading prediction is never delayed by the shadow)."""
        raw = self.bf.features.values
        probs = self.shadow.predict(raw)
        best = int(probs.argmax())
        in_range = not self.shadow.out_of_range(raw) and self.bf.warm
        return ShadowPrediction(self.contract, bar.start_ns, self.shadow.classes[best], float(probs[best]),
                                [float(p) for p in probs], self.shadow.version, pred.model_version, pred.direction,
                                pred.confidence, bar.close_ticks, bar.bid_ticks, bar.ask_ticks, pred.atr_ticks,
                                in_range, pred.features_in_range)

    def predict(self, bar: Bar) -> Prediction:
        t0 = time.perf_counter_ns()
        raw = self.bf.update(bar)
        self.stats.resets = self.bf.resets
        self._last_bar = bar
        t1 = time.perf_counter_ns()
        probs = self.model.predict(raw)
        best = int(probs.argmax())
        t2 = time.perf_counter_ns()
        bad = self.model.out_of_range(raw)
        if not self.bf.warm:
            bad.append(WARMUP_FLAG)
        feature_us, inference_us = (t1 - t0) / 1000, (t2 - t1) / 1000
        st = self.stats
        st.bars += 1
        st.predictions += 1
        st.out_of_range += bool(bad)
        st.last_feature_us, st.last_inference_us = feature_us, inference_us
        st.max_feature_us = max(st.max_feature_us, feature_us)
        st.max_inference_us = max(st.max_inference_us, inference_us)
        return self._prediction(bar, probs, best, feature_us, inference_us, bad)

    def _prediction(self, bar: Bar, probs, best: int, feature_us: float, inference_us: float,
                    bad: list[str]) -> Prediction:
        spread = bar.ask_ticks - bar.bid_ticks if bar.bid_ticks > 0 and bar.ask_ticks > 0 else 0
        return Prediction(self.contract, bar.start_ns, self.classes[best], float(probs[best]),
                          [float(p) for p in probs], self.model.version, bar.close_ticks, self.atr.value,
                          spread, feature_us, inference_us, not bad, bad)

    def warm_up(self) -> None:
        """The per-bar path (features, model, range check, Prediction and its encoding) on the
        last bar again, on scratch windows, its result dropped: after a second idle the bar
        cost ~350 us cold against ~35 us warm, most of it code and data fallen out of the
        caches. Changes nothing the worker publishes (the model's buffers are rewritten by
        the next predict)."""
        bar = self._last_bar
        if bar is None:
            return
        raw = self._scratch.update(bar)
        probs = self.model.predict(raw)
        pred = self._prediction(bar, probs, int(probs.argmax()), 0.0, 0.0, self.model.out_of_range(raw))
        encode(pred, seq=0, ts_ns=0, src="warm")
        if self.shadow is not None:
            self.shadow.predict(raw)
