"""Alerts and metrics process: watches the bus, tells the trader (webhook, Telegram, e-mail)
and serves Prometheus metrics on loopback. It publishes nothing to the trading services.

    python -m services.alerts --config config/live_trading.yaml

Exit 2 with one line on a bad config or a metrics port that cannot be bound.
"""
from __future__ import annotations

import sys

from common.service import boot
from services.alerts.config import AlertsConfig
from services.alerts.watcher import SERVICE, Watcher


def main(argv: list[str] | None = None) -> int:
    cfg, sect, clock = boot(SERVICE, AlertsConfig, argv, __doc__)
    return Watcher(cfg, sect, clock).run()


if __name__ == "__main__":
    sys.exit(main())
