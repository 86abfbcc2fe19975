"""Position keeper process: gateway fills + feed quotes -> positions, P&L, round trips; broker reconciliation.

    python -m services.positions --config config/live_trading.yaml

Exit 2 with one line on a bad config or a socket that cannot be bound. A broker that is not
reachable at start is no reason to exit: resolving a contract symbol waits for it (common/service.py,
common/topstepx/startup.py) and the reconciliation retries on its period. SIGTERM saves the
state, writes the session files and the report, and exits 0. The keeper itself is
services/positions/keeper.py; this file builds its sockets and wires them to the loop.
"""
from __future__ import annotations

import sys

from loguru import logger

from common.bus import LATEST_ONLY_HWM, Publisher, ReplyServer, ServiceLoop, Subscriber
from common.messages import Fill, Heartbeat, OrderEvent, Quote
from common.service import boot
from common.statefile import BadStateFile
from common.topstepx.budget import budget_path
from common.topstepx.rest import TopstepXClient
from services.positions.config import PositionsConfig
from services.positions.keeper import Keeper

SERVICE = "positions"


def main(argv: list[str] | None = None) -> int:
    cfg, sect, clock = boot(SERVICE, PositionsConfig, argv, __doc__)
    keeper = Keeper(cfg, sect, clock, cfg.path(cfg.logging.dir))
    try:
        keeper.restore()
    except BadStateFile as exc:
        return exc.stop()     # one line naming the file and `scalper recover positions`; exit 3
    loop = ServiceLoop(SERVICE)
    try:
        pub = Publisher(SERVICE, cfg.bus.positions_pub, cfg.bus.positions_snap, clock=keeper.now_ns).attach(loop)
        rep = ReplyServer(SERVICE, cfg.bus.positions_query, keeper.on_query).attach(loop)
    except OSError as exc:
        logger.error(f"BUS: refusing to start: {exc}")
        return 2
    try:
        rest = TopstepXClient.from_config(cfg.api, share=sect.rate_share, budget=str(budget_path(cfg)))
    except Exception as exc:  # a client that cannot be built: keep tracking fills, say so
        logger.error(f"RECONCILE: no broker client ({type(exc).__name__}: {exc}); fills only")
        rest = None
    orders = Subscriber(SERVICE, cfg.bus.orders_pub, cfg.bus.orders_snap, topics=[Fill, OrderEvent, Heartbeat])
    feed = Subscriber(SERVICE, cfg.bus.feed_pub, cfg.bus.feed_snap, topics=[Quote, Heartbeat], hwm=LATEST_ONLY_HWM)
    # other services' heartbeats carry the latency figures for the metrics and the report
    others = [Subscriber(SERVICE, getattr(cfg.bus, f"{name}_pub"), None, topics=[Heartbeat])
              for name in ("inference", "engine")] if sect.service_heartbeats else []
    keeper.connect(loop, pub, rest, orders, feed, others)

    loop.add_reader(orders.sock, keeper.on_orders)
    loop.add_reader(feed.sock, keeper.on_feed)
    for sub in others:
        loop.add_reader(sub.sock, lambda s=sub: keeper.on_heartbeats(s))
    loop.every(sect.heartbeat_s, keeper.heartbeat, first_in=0.0)
    loop.every(sect.reconcile_s, lambda: keeper.request_sync("periodic", False), first_in=sect.reconcile_s)
    loop.every(0.25, keeper.tick)

    def close() -> None:
        keeper.shutdown()
        for s in [orders, feed, *others]:
            s.close()
        rep.close()
        pub.close()
    loop.on_shutdown(close)
    logger.info(f"POSITIONS: keeper up; fills {cfg.bus.orders_pub}, quotes {cfg.bus.feed_pub} -> "
                f"{cfg.bus.positions_pub}, queries {cfg.bus.positions_query}; reconcile every {sect.reconcile_s} s")
    keeper.publish_all()
    keeper.request_sync("start", True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
