"""What every service process does first: read its arguments and config, set up its clock and
logging. A bad config ends the process here with exit code 2 and one line naming the key."""
from __future__ import annotations

import argparse
import sys
from typing import TypeVar

from pydantic import BaseModel

from loguru import logger

from common import hotpath
from common.clock import EventClock, LiveClock, make_clock, to_ny
from common.config import Config, ConfigError, HotPathConfig, load_config
from common.contracts import ContractError, check_contract, resolve_with_client
from common.instruments import INSTRUMENTS
from common.logging import setup_logging
from common.session import SessionCalendar
from common.topstepx.rest import TopstepXClient

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
    cfg = resolve_contract(cfg, clock, service)
    hotpath.install(hot)            # gc and bar-boundary warm-up, applied by the ServiceLoop (common/hotpath.py)
    return cfg, sect, clock


def resolve_contract(cfg: Config, clock: LiveClock | EventClock, service: str) -> Config:
    """trading.contract as a symbol (MES) -> its front month over REST, logged; in live mode an
    id is checked against its expiry (the CME rule, on the wall date). An expired or unlisted contract ends the process (exit 2, one line);
    one expiring within trading.expiry_warning_days is warned about. A broker not reachable yet is
    waited for, one line per attempt; refused credentials end it (exit 2). Sim mode with an explicit
    id asks nothing (a service may run without a broker in tests)."""
    spec = cfg.trading.contract
    if spec not in INSTRUMENTS and cfg.api.mode != "live":
        return cfg
    # the date is known on the wall clock; an event clock has no time before its first event
    today = to_ny(clock.now_ns()).date() if isinstance(clock, LiveClock) else None
    trading_day = SessionCalendar.from_config(cfg.trading).is_trading_day
    try:
        if spec in INSTRUMENTS:
            client = TopstepXClient.from_config(cfg.api, share=0.05)
            try:
                cid, warning = resolve_with_client(client, spec, today, cfg.trading.expiry_warning_days, trading_day)
            finally:
                client.close()
        else:   # an id: its expiry is the CME rule's, no broker needed
            cid, warning = spec, check_contract(spec, today, cfg.trading.expiry_warning_days, trading_day)
    except ContractError as exc:
        print(f"{service}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    logger.info(f"CONTRACT: trading.contract {spec} -> {cid}")
    if warning:
        logger.warning(warning)
    return cfg.model_copy(update={"trading": cfg.trading.model_copy(update={"contract": cid})})


def tool_config(prog: str, description: str, argv: list[str] | None = None,
                add_args=None) -> tuple[Config, argparse.Namespace]:
    """Start-up of a one-shot program run by `scalper` (report, check, recover, shadow): parse
    `--config` and the program's own arguments (`add_args(parser)`), load the config. A bad config
    is one line on stderr and exit 2, as for a service."""
    ap = argparse.ArgumentParser(prog=prog, description=description)
    ap.add_argument("--config", default=None, help="YAML config (default: $SCALPER_CONFIG or config/live_trading.yaml)")
    if add_args is not None:
        add_args(ap)
    args = ap.parse_args(argv)
    try:
        return load_config(args.config), args
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(2) from None
