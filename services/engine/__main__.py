"""Signal + risk engine process: predictions, positions, orders, feed SUB -> order commands (REQ),
signals and risk events PUB, operator commands REP.

    python -m services.engine --config config/live_trading.yaml

Refuses to start (exit 2, one line) on a bad config.
"""
from __future__ import annotations

import sys
import time

from loguru import logger

from common.bus import (
    LATEST_ONLY_HWM, LazyPirateClient, Publisher, ReplyServer, ServiceLoop, ServiceUnavailable, Subscriber,
)
from common.clock import EventClock
from common.instruments import InstrumentError, instrument_for
from common.messages import (
    Account, Bar, FeedStatus, Heartbeat, OperatorCommand, OrderCommand, OrderEvent, OrderReply,
    Position, Prediction, Quote, Reply, RiskEvent,
)
from common.service import boot
from services.engine.config import EngineConfig
from services.engine.engine import Engine
from services.engine.status_asker import StatusAsker

SERVICE = "engine"


def main(argv: list[str] | None = None) -> int:
    cfg, sect, clock = boot(SERVICE, EngineConfig, argv, __doc__)
    try:
        instrument_for(sect.contract or cfg.trading.contract)
    except InstrumentError as exc:
        print(f"{SERVICE}: config error ({cfg.source}): engine.contract: {exc}", file=sys.stderr)
        return 2
    for w in cfg.warnings():
        logger.warning(f"CONFIG: {w}")

    loop = ServiceLoop(SERVICE)
    try:
        pub = Publisher(SERVICE, cfg.bus.engine_pub, cfg.bus.engine_snap, clock=clock.now_ns).attach(loop)
    except OSError as exc:
        logger.error(f"BUS: refusing to start: {exc}")
        return 2
    client = LazyPirateClient(SERVICE, cfg.bus.orders_cmd, sect.command_timeout_ms, sect.command_retries)

    def send(cmd: OrderCommand, hops: dict, on_sent=None) -> OrderReply | None:
        # a gateway already known not to answer gets one short try: the loop never waits on it
        # for long (the idempotency key makes the engine's later resend of an exit safe)
        quick = {"timeout_ms": sect.stale_command_timeout_ms, "retries": 0} if engine.gateway_stale else {}
        try:
            env = client.request(cmd, hops=hops, on_sent=on_sent, **quick)
        except ServiceUnavailable as exc:
            logger.error(f"BUS: {exc}")
            return None
        if isinstance(env.msg, OrderReply):
            return env.msg
        return OrderReply(cmd.key, False, "error", f"gateway answered {env.type}: {getattr(env.msg, 'message', '')}")

    def publish(msg, key: str | None = None) -> None:
        pub.publish(msg, key=key, ts_ns=clock.now_ns() or None)

    # heartbeats come once a second of wall time, whatever the clock: judge silence on wall time
    engine = Engine(cfg, sect, clock, send, publish, wall=time.monotonic_ns)
    logger.info(f"ENGINE: starting for {engine.contract}; orders {cfg.bus.orders_cmd}, clock {cfg.trading.clock}, "
                f"needed services {sect.needed_services}")

    subs = {
        "feed": Subscriber(SERVICE, cfg.bus.feed_pub, cfg.bus.feed_snap, topics=[Quote, FeedStatus, Heartbeat],
                           hwm=LATEST_ONLY_HWM),
        "inference": Subscriber(SERVICE, cfg.bus.inference_pub, cfg.bus.inference_snap,
                                topics=[Prediction, Bar, Heartbeat]),
        "positions": Subscriber(SERVICE, cfg.bus.positions_pub, cfg.bus.positions_snap,
                                topics=[Position, Account, RiskEvent, Heartbeat]),
        "orders": Subscriber(SERVICE, cfg.bus.orders_pub, cfg.bus.orders_snap,
                             topics=[OrderEvent, RiskEvent, Heartbeat, OrderReply]),
    }

    def handle(name: str) -> None:
        for env in subs[name].drain():
            msg = env.msg
            if name == "feed" and not env.snapshot:
                ts = getattr(msg, "exch_ns", 0)
                if ts and isinstance(clock, EventClock):
                    clock.advance(ts)
                if ts and loop.hot is not None:
                    loop.hot.observe_market(ts, tick=not isinstance(msg, Heartbeat))   # the window follows the market
            if isinstance(msg, Heartbeat):
                if not env.snapshot:
                    engine.on_heartbeat(msg, env.src)
            elif isinstance(msg, Quote):
                if not env.snapshot:
                    engine.on_quote(msg)
            elif isinstance(msg, FeedStatus):
                logger.debug(f"FEED: {msg.state} {msg.detail}")
                if not env.snapshot:
                    engine.on_feed_status(msg.state, msg.detail)
            elif isinstance(msg, Prediction):
                if loop.hot is not None and not env.snapshot:
                    loop.hot.bar_event()
                engine.on_prediction(msg, env.hops, env.snapshot)
            elif isinstance(msg, Bar):
                if not env.snapshot:
                    engine.on_bar(msg)
            elif isinstance(msg, Position):
                engine.on_position(msg)
            elif isinstance(msg, Account):
                engine.on_account(msg)
            elif isinstance(msg, RiskEvent):
                engine.on_risk_event(msg, env.src)
            elif isinstance(msg, OrderEvent):
                engine.on_order_event(msg, env.snapshot)
            elif isinstance(msg, OrderReply) and not env.snapshot:
                engine.on_command_outcome(msg)

    for name, sub in subs.items():
        loop.add_reader(sub.sock, lambda n=name: handle(n))

    # the supervisord listener: a crash loop halts entries (its heartbeats only bring the snapshot)
    supervision = Subscriber(SERVICE, cfg.bus.supervision_pub, cfg.bus.supervision_snap, topics=[RiskEvent, Heartbeat])

    def on_supervision() -> None:
        for env in supervision.drain():
            if isinstance(env.msg, RiskEvent):
                engine.on_risk_event(env.msg, env.src)
    loop.add_reader(supervision.sock, on_supervision)
    handle("positions")      # the keeper's snapshot (position, account) before any decision
    handle("orders")

    def on_cmd(env) -> Reply:
        if not isinstance(env.msg, OperatorCommand):
            return Reply(False, f"expected OperatorCommand, got {env.type}")
        logger.info(f"OPERATOR: {env.msg.action} {env.msg.reason}".rstrip())
        return engine.operator(env.msg)

    try:
        rep = ReplyServer(SERVICE, cfg.bus.engine_cmd, on_cmd).attach(loop)
    except OSError as exc:
        logger.error(f"BUS: refusing to start: {exc}")
        return 2

    asker = StatusAsker(cfg.bus.orders_cmd, sect.status_timeout_s, sect.status_retry_s,
                        engine.sync_status, engine.gateway_unanswered)
    loop.add_reader(asker.sock, asker.on_readable)
    loop.add_reader(asker.monitor, asker.on_connection)

    def heartbeat() -> None:
        state = "halted" if engine.breakers.active or engine.day_halt.get(engine.trading_day()) else "ok"
        if not engine.synced:
            state = "starting"
        elif state == "ok" and engine.gateway_stale:
            state = "degraded"
        pub.heartbeat(state, exch_ns=clock.now_ns(), stats={**engine.stats(), **loop.hot_stats()})

    loop.every(sect.tick_s, engine.tick, first_in=0.0)
    loop.every(min(0.1, sect.status_timeout_s / 4), lambda: asker.poll(engine.need_status), first_in=0.0)
    loop.every(sect.heartbeat_s, heartbeat, first_in=0.0)

    def close() -> None:
        logger.info(f"ENGINE: stopping; {engine.stats()}")
        for s in subs.values():
            s.close()
        supervision.close()
        rep.close()
        asker.close()
        client.close()
        pub.close()
    loop.on_shutdown(close)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
