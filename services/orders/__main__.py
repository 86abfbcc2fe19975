"""Order gateway process: REP orders_cmd -> broker (REST + user hub) -> PUB orders_pub.

    python -m services.orders --config config/live_trading.yaml

Refuses to start (exit 2, one line) on a bad config, credentials the broker refuses (401, a
refused login), an account that is not found, or a socket in use. A broker that is not reachable
yet (connection refused, timeouts, 5xx, 429) is waited for, with one WARNING line per attempt and
a doubling pause, at login, account lookup and the first reconciliation
(common/topstepx/startup.py): supervisord does not restart a gateway that was only early.
SIGTERM/SIGINT: when the session ends (supervisord shutting down, or no supervisord), cancel
working orders, flatten, verify, save state, exit 0; when only this program is restarted, keep
a protected position for the next gateway (services/orders/stop_kind.py).
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from loguru import logger

from common.bus import LATEST_ONLY_HWM, Publisher, ServiceLoop, Subscriber
from common.clock import EventClock
from common.messages import Fill, Heartbeat, OrderCommand, OrderReply, Quote, RiskEvent, topic_of
from common.service import boot
from common.session import SessionCalendar
from common.statefile import BadStateFile
from common.topstepx.budget import budget_path
from common.topstepx.hub import HubClient, hub_timing
from common.topstepx.rest import OutcomeUnknown, TopstepXClient, TopstepXError
from common.topstepx.startup import until_reachable
from services.orders.broker_io import BrokerPool, InlineRunner, LoopRunner
from services.orders.command_socket import CommandSocket
from services.orders.config import OrdersConfig
from services.orders.gateway import Gateway
from services.orders.journal import Journal
from services.orders.stop_kind import SHUTDOWN, stop_kind

SERVICE = "orders"
FILL_TOPIC = topic_of(Fill)


def find_account(rest: TopstepXClient, cfg) -> int:
    if cfg.api.account_id is not None:
        return int(cfg.api.account_id)
    accounts = rest.accounts()
    if cfg.api.account_name:
        accounts = [a for a in accounts if a.get("name") == cfg.api.account_name]
    if not accounts:
        raise TopstepXError("no active account found")
    return int(accounts[0]["id"])


def main(argv: list[str] | None = None) -> int:
    cfg, sect, clock = boot(SERVICE, OrdersConfig, argv, __doc__)
    calendar = SessionCalendar.from_config(cfg.trading)
    rest = TopstepXClient.from_config(cfg.api, share=sect.rate_share, reserve=sect.rate_reserve,
                                      budget=str(budget_path(cfg)) if sect.shared_budget else None)
    gw = None

    def on_cmd(env):
        msg = env.msg
        if not isinstance(msg, OrderCommand):
            return OrderReply("", False, "error", f"expected OrderCommand, got {env.type}")
        if msg.action == "enter" and loop.hot is not None:
            loop.hot.bar_event()
        return gw.handle(msg, env.hops)

    # bound first: while the gateway waits for the broker, its callers get a refusal that says so
    try:
        rep = CommandSocket(SERVICE, cfg.bus.orders_cmd, on_cmd, sect.answer_within_s,
                            lambda task: gw.command_answered_early(task))
    except OSError as exc:
        logger.error(f"BUS: refusing to start: {exc}")
        return 2

    def starting(seconds: float) -> None:
        rep.refuse_for(seconds, "the gateway is starting: waiting for the broker")
    try:
        until_reachable("login", rest.login, sleep=starting)
        account_id = until_reachable("account lookup", lambda: find_account(rest, cfg), sleep=starting)
    except TopstepXError as exc:
        logger.error(f"API: refusing to start: {exc}")
        return 2
    state_dir = Path(sect.state_dir) if sect.state_dir else cfg.path(cfg.logging.dir) / "state"
    try:
        journal = Journal(state_dir / f"orders_{account_id}.sqlite")
    except BadStateFile as exc:
        return exc.stop()       # one line naming the file and `scalper recover orders`; exit 3

    loop = ServiceLoop(SERVICE)
    try:
        pub = Publisher(SERVICE, cfg.bus.orders_pub, cfg.bus.orders_snap).attach(loop)
    except OSError as exc:
        logger.error(f"BUS: refusing to start: {exc}")
        return 2
    gw = Gateway(cfg, sect, rest, journal, account_id, pub.publish, clock, calendar)
    if loop.hot is not None:        # WAL checkpoints off the hot path, never while a flow waits on the broker
        journal.checkpoint_when_idle(loop.hot, busy=lambda: not gw.runner.idle())
    if gw.republish_fills():
        logger.info(f"ORDERS: {len(pub.retained)} fills of {gw.last_fill_day} from the journal retained again")
    logger.info(f"ORDERS: account {account_id}, contract {cfg.trading.contract}, journal {journal.path}, "
                f"max_contracts {cfg.risk.max_contracts}, max_daily_loss {cfg.risk.max_daily_loss}")

    # state at start: what did we send, what does the broker hold (kill -9 recovery)
    def initial_reconcile() -> None:
        task = gw.spawn(gw.reconcile(initial=True), "initial reconcile")
        if task.error is not None or not task.result:
            raise OutcomeUnknown(f"{task.error or 'a search failed'}")
    until_reachable("initial reconciliation", initial_reconcile, prefix="SYNC", sleep=starting)
    if journal.created:
        logger.warning(f"SYNC: new journal {journal.path}: state rebuilt from the broker: "
                       f"{len(gw.positions)} open positions, "
                       f"{len(gw.book.working())} working orders")
    # from here on, broker calls run on worker threads and their results come back as loop events
    pool = BrokerPool(sect.broker_workers, name="broker")
    gw.runner = LoopRunner(pool, loop.call_soon_threadsafe)
    loop.every(0.02, gw.runner.tick)
    rep.attach(loop)

    feed = Subscriber(SERVICE, cfg.bus.feed_pub, cfg.bus.feed_snap, topics=[Quote, Heartbeat],
                      hwm=LATEST_ONLY_HWM)

    def on_feed() -> None:
        for env in feed.drain():
            m = env.msg
            ts = 0
            if isinstance(m, Quote):
                ts = m.exch_ns
                gw.marks[m.contract] = m.last_ticks or (m.bid_ticks + m.ask_ticks) // 2
            elif isinstance(m, Heartbeat) and m.service == "feed":
                ts = m.exch_ns
            if isinstance(clock, EventClock) and ts > 0:
                clock.advance(ts)
            if loop.hot is not None and ts > 0 and not env.snapshot:
                loop.hot.observe_market(ts, tick=isinstance(m, Quote))   # the window follows the market
    loop.add_reader(feed.sock, on_feed)

    hub = None
    if sect.user_hub:
        def subscribe(h):
            for m in ("SubscribeOrders", "SubscribeTrades", "SubscribePositions"):
                h.send(m, [account_id])
        handlers = {t: (lambda args, t=t: loop.call_soon_threadsafe(lambda: gw.on_hub(t, args)))
                    for t in ("GatewayUserOrder", "GatewayUserTrade", "GatewayUserPosition")}
        hub = HubClient(cfg.api.user_hub_url, rest.token, subscribe, handlers, name="user",
                        on_state=lambda s, d: loop.call_soon_threadsafe(lambda: gw.on_hub_state(s, d)),
                        min_backoff_s=sect.hub_min_backoff_s,
                        max_backoff_s=max(sect.hub_max_backoff_s, sect.hub_min_backoff_s), **hub_timing(cfg.api))
        hub.start()

    def heartbeat() -> None:
        state = "halted" if gw.halted else ("ok" if gw.hub_reconciled else "degraded")
        pub.publish(Heartbeat(SERVICE, state, os.getpid(), round(time.monotonic() - pub.started, 3),
                              clock.now_ns(), {**gw.stats, "hub": gw.hub_state, "halted": gw.halted,
                                               "day_pnl_cents": gw.day_pnl_cents(), **gw.hops.flat(),
                                               # for the Prometheus exporter (services/alerts)
                                               "working_orders": len(gw.book.working()),
                                               "rest_free": rest.limiter.free(), "http_429": rest.stats["http_429"],
                                               "hops_recent": gw.hops.recent_list(),
                                               "broker_queue": pool.queued(), "broker_busy": pool.busy,
                                               "answered_early": rep.answered_early,
                                               **loop.hot_stats()}))

    loop.every(sect.heartbeat_s, heartbeat, first_in=0.0)

    # common.bus.Subscriber does not check the epoch on Heartbeats, so subscribers only notice a
    # restarted gateway (and fetch its snapshot) on the next other message: send one soon after start.
    announced = []

    def announce() -> None:
        if not announced:
            announced.append(1)
            pub.publish(RiskEvent("orders_started", False, "INFO", f"order gateway started (pid {os.getpid()}); "
                                  "state reconciled with the broker"))
    loop.every(1.0, announce, first_in=1.0)
    loop.every(0.25, lambda: gw.spawn_once("periodic", gw.periodic))

    def forget_old_fills() -> None:
        """The snapshot carries the latest trading day's fills, as after a restart (republish_fills);
        fills of earlier days leave the retained state, which would otherwise grow day after day."""
        for rk in [rk for rk in pub.retained if rk[0] == FILL_TOPIC and rk[1].isdigit()
                   and gw.seen_trades.get(int(rk[1])) != gw.last_fill_day]:
            pub.retained.pop(rk, None)
    loop.every(60.0, forget_old_fills, first_in=60.0)
    loop.every(sect.guard_s, lambda: gw.spawn_once("guard", gw.guard))

    def close() -> None:
        try:
            gw.runner = InlineRunner()              # the loop has stopped: finish in this thread
            kind = stop_kind(sect.on_stop)
            logger.warning(f"SHUTDOWN: stopping for a {kind} (orders.on_stop {sect.on_stop})")
            gw.spawn(gw.shutdown() if kind == SHUTDOWN else gw.keep_for_restart(), kind)
        finally:
            pool.stop(1.0)
            if hub is not None:
                hub.stop(2.0)
            journal.close()
            feed.close()
            rep.close()
            pub.close()
            rest.close()
    loop.on_shutdown(close)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
