"""Feature/inference worker process: feed SUB -> InferenceWorker -> bars and predictions PUB.

    python -m services.inference --config config/live_trading.yaml

Refuses to start (exit 2, one line) on a bad config or an unusable model.
"""
from __future__ import annotations

import sys
import time

from loguru import logger

from common.bus import Publisher, ServiceLoop, Subscriber
from common.clock import EventClock
from common.messages import Bar, Heartbeat, Prediction, Quote, ShadowPrediction, Trade
from common.service import boot
from services.inference.config import InferenceConfig
from services.inference.features import FEATURE_NAMES
from services.inference.model import ModelError, live_gate, load_model
from services.inference.shadow_log import ShadowLog
from services.inference.worker import InferenceWorker

SERVICE = "inference"


def main(argv: list[str] | None = None) -> int:
    cfg, sect, clock = boot(SERVICE, InferenceConfig, argv, __doc__)
    try:
        model = load_model(cfg.path(cfg.model.path), cfg.path(cfg.model.config), list(FEATURE_NAMES))
    except ModelError as exc:
        logger.error(f"MODEL: refusing to start: {exc}")
        return 2
    ok, why = live_gate(cfg.api.mode, model.config, cfg.model.allow_unproven_model)
    if not ok:
        logger.error(f"MODEL: refusing to start: {why}")
        return 2
    if why:
        logger.warning(f"MODEL: {why}")
    validated = (model.config.get("thresholds") or {}).get("min_confidence")
    if cfg.model.demo_threshold and cfg.api.mode == "live" and not cfg.model.allow_unproven_model:
        logger.error("MODEL: refusing to start: model.demo_threshold is set in live mode; set the model's validated "
                     "min_confidence, or model.allow_unproven_model: true to run it anyway")
        return 2
    if not cfg.model.demo_threshold and validated is not None and cfg.model.min_confidence < validated:
        logger.warning(f"MODEL: min_confidence {cfg.model.min_confidence} is below the model's validated "
                       f"threshold {validated} (where its walk-forward EV after costs turns positive)")
    if cfg.model.demo_threshold:
        logger.warning(f"MODEL: min_confidence {cfg.model.min_confidence} is a DEMO threshold (model.demo_threshold), "
                       f"not the model's validated one ({validated}); for the simulator only")
    shadow = None
    if cfg.model.shadow_path:
        try:
            shadow = load_model(cfg.path(cfg.model.shadow_path), cfg.path(cfg.model.shadow_config or ""),
                                list(FEATURE_NAMES))
        except ModelError as exc:
            logger.error(f"MODEL: refusing to start: shadow model: {exc}")
            return 2
        logger.info(f"MODEL: shadow {shadow.version} scores beside {model.version}; it never trades")
    contract = sect.contract or cfg.trading.contract
    worker = InferenceWorker(model, contract, cfg.risk.atr_period, sect.max_gap_s, sect.publish_minute_bars,
                             shadow=shadow)
    shadow_log = ShadowLog(cfg.path(cfg.logging.dir)) if shadow is not None else None
    logger.info(f"MODEL: loaded {model.version} ({model.n_features} features, classes {model.classes}) "
                f"for {contract}; feed {cfg.bus.feed_pub} -> {cfg.bus.inference_pub}")

    loop = ServiceLoop(SERVICE)
    if loop.hot is not None:     # before each bar closes: the per-bar path again on scratch state (result unused)
        loop.hot.add_warmer(worker.warm_up)
        loop.hot.wait_for_close()     # it computes the bar on the closing tick: warm before it comes
    try:
        pub = Publisher(SERVICE, cfg.bus.inference_pub, cfg.bus.inference_snap).attach(loop)
    except OSError as exc:
        logger.error(f"BUS: refusing to start: {exc}")
        return 2
    sub = Subscriber(SERVICE, cfg.bus.feed_pub, cfg.bus.feed_snap, topics=[Trade, Quote, Heartbeat])
    max_feature_us = cfg.model.max_feature_ms * 1000
    max_inference_us = cfg.model.max_inference_ms * 1000
    counts = {"feed_msgs": 0, "ignored": 0}
    debug = cfg.logging.level.upper() in ("DEBUG", "TRACE")

    def emit(outputs: list, upstream: dict[str, int]) -> None:
        """Publish bars and predictions. A prediction carries the hops of the tick that closed
        its bar plus this stage's own (bar closed, features done, model scored), so the session
        report can show each stage's latency in production."""
        for m in outputs:
            if isinstance(m, ShadowPrediction):
                pub.publish(m, key=m.contract, ts_ns=worker.exch_ns)
                shadow_log.write(m)
                continue
            if isinstance(m, Bar):
                pub.publish(m, key=f"{m.contract}:{m.interval_s}", ts_ns=m.start_ns + m.interval_s * 1_000_000_000)
            else:
                assert isinstance(m, Prediction)
                scored = time.time_ns()
                if loop.hot is not None:
                    loop.hot.bar_event()
                features_done = scored - int(m.inference_us * 1000)
                hops = {**upstream, "bar_closed": features_done - int(m.feature_us * 1000),
                        "features_done": features_done, "model_scored": scored}
                pub.publish(m, key=m.contract, ts_ns=worker.exch_ns, hops=hops)
                if debug:     # formatting this line costs tens of us a bar: only when it is written
                    logger.debug(f"PREDICTION: {m.direction:+d} conf {m.confidence:.3f} probs "
                                 f"{[round(p, 3) for p in m.probs]} close {m.close_ticks} atr {m.atr_ticks:.2f} "
                                 f"in_range {m.features_in_range}{' ' + ','.join(m.out_of_range) if m.out_of_range else ''} "
                                 f"feat {m.feature_us:.0f}us inf {m.inference_us:.0f}us")
                if m.feature_us > max_feature_us or m.inference_us > max_inference_us:
                    logger.warning(f"MODEL: slow bar: features {m.feature_us:.0f} us, inference "
                                   f"{m.inference_us:.0f} us (limits {max_feature_us:.0f}/{max_inference_us:.0f})")

    def on_feed() -> None:
        for env in sub.drain():
            msg = env.msg
            counts["feed_msgs"] += 1
            if isinstance(msg, Trade):
                if env.snapshot:          # a retained old trade: already seen or too old to count
                    continue
                out = worker.on_trade(msg.contract, msg.price_ticks, msg.size, msg.aggressor, msg.exch_ns)
                ts = msg.exch_ns
            elif isinstance(msg, Quote):
                out = worker.on_quote(msg.contract, msg.bid_ticks, msg.ask_ticks, msg.exch_ns)
                ts = msg.exch_ns
            elif isinstance(msg, Heartbeat):
                out = worker.on_time(msg.exch_ns)
                ts = msg.exch_ns
            else:
                counts["ignored"] += 1
                continue
            if isinstance(clock, EventClock) and ts > 0:
                clock.advance(ts)
            if loop.hot is not None and not env.snapshot:
                loop.hot.observe_market(ts, tick=not isinstance(msg, Heartbeat))   # the window follows the market
            if out:
                emit(out, env.hops)

    def heartbeat() -> None:
        st = worker.stats
        pub.heartbeat("ok" if st.predictions else "starting", exch_ns=worker.exch_ns, stats={
            "feed_msgs": counts["feed_msgs"], "trades": st.trades, "quotes": st.quotes, "bars": st.bars,
            "minute_bars": st.minute_bars, "predictions": st.predictions, "late_ticks": worker.late_ticks,
            "other_contract": st.other_contract, "out_of_range": st.out_of_range, "resets": st.resets,
            "breaks": worker.seconds.breaks, "max_feature_us": round(st.max_feature_us, 1),
            "max_inference_us": round(st.max_inference_us, 1), "malformed": sub.stats.malformed,
            "gaps": sub.stats.gaps, "model_version": model.version,
            **loop.hot_stats()})

    loop.add_reader(sub.sock, on_feed)
    loop.every(sect.heartbeat_s, heartbeat, first_in=0.0)

    def close() -> None:
        st = worker.stats
        logger.info(f"MODEL: {st.predictions} predictions, {st.bars} bars, {worker.late_ticks} late ticks dropped")
        sub.close()
        pub.close()
        if shadow_log is not None:
            shadow_log.close()
    loop.on_shutdown(close)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
