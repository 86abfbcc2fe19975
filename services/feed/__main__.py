"""Feed process: TopstepX market hub -> Quote/Trade/FeedStatus/Heartbeat on the feed socket.

    python -m services.feed --config config/live_trading.yaml

The feed itself is services/feed/market_feed.py; its stale watchdog and token refresh are
services/feed/watchdog.py.
"""
from __future__ import annotations

import sys

from loguru import logger

from common.bus import Publisher, ServiceLoop
from common.service import boot
from services.feed.config import FeedConfig
from services.feed.market_feed import MarketFeed

SERVICE = "feed"


def main(argv: list[str] | None = None) -> int:
    cfg, fcfg, clock = boot(SERVICE, FeedConfig, argv, __doc__)
    loop = ServiceLoop(SERVICE)
    try:
        pub = Publisher(SERVICE, cfg.bus.feed_pub, cfg.bus.feed_snap).attach(loop)
    except OSError as exc:
        logger.error(f"BUS: refusing to start: {exc}")
        return 2
    feed = MarketFeed(cfg, fcfg, clock, loop, pub)
    logger.info(f"FEED: {feed.contract} from {cfg.api.market_hub_url} -> {cfg.bus.feed_pub}"
                + (f"; recording to {feed.recorder.directory}" if feed.recorder else ""))
    feed.on_state("connecting", "starting")
    loop.every(fcfg.heartbeat_s, feed.every_second)
    loop.every(fcfg.watchdog_s, feed.watch)
    loop.on_shutdown(feed.shutdown)
    loop.on_shutdown(pub.close)
    feed.hub.start()
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
