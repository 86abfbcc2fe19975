"""What every service process does first: read its arguments and config, set up its clock and
logging. A bad config ends the process here with exit code 2 and one line naming the key."""
from __future__ import annotations

import argparse
import sys
from typing import TypeVar

from pydantic import BaseModel

from common.clock import EventClock, LiveClock, make_clock
from common import hotpath
from common.config import Config, ConfigError, HotPathConfig, load_config
from common.logging import setup_logging

M = TypeVar("M", bound=BaseModel)


def boot(service: str, section: type[M], argv: list[str] | None, doc: str | None
         ) -> tuple[Config, M, LiveClock | EventClock]:
    """Parse `--config`, load and validate it (shared sections and this service's own), make
    the clock, set up logging and the hot-path policy. Raises SystemExit(2) with one line on a bad config."""
    ap = argparse.ArgumentParser(prog=f"python -m services.{service}",
                                 description=(doc or service).strip().splitlines()[0])
    ap.add_argument("--config", default=None, help="YAML config (default: $SCALPER_CONFIG or config/live_trading.yaml)")
    args = ap.parse_args(argv)
    try:
        cfg = load_config(args.config)
        sect = cfg.section(service, section)
        hot = cfg.section("hotpath", HotPathConfig)
    except ConfigError as exc:
        print(f"{service}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    clock = make_clock(cfg.trading.clock)
    setup_logging(service, cfg.path(cfg.logging.dir), cfg.logging.level, clock=clock, console=cfg.logging.console)
    hotpath.install(hot)            # gc and bar-boundary warm-up, applied by the ServiceLoop (common/hotpath.py)
    return cfg, sect, clock
