"""python -m services.sim [--config PATH] [--port N] [--speed X] [--only-in-sim-mode]"""
from __future__ import annotations

import argparse
import os
import ssl
import sys
import time

from aiohttp import web
from loguru import logger

from common.config import ConfigError, load_config
from common.clock import to_ny
from common.contracts import expiry_date, is_expired, quarterly_months
from common.instruments import INSTRUMENTS, instrument_for
from common.logging import register_secret, setup_logging
from services.sim.config import SimConfig
from services.sim.market import load_ticks, shift_for
from services.sim.server import build_app
from services.sim.simulator import Simulator


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m services.sim", description=__doc__)
    ap.add_argument("--config", default=None)
    ap.add_argument("--port", type=int, default=None)
    ap.add_argument("--speed", type=float, default=None)
    ap.add_argument("--only-in-sim-mode", action="store_true",
                    help="exit 0 at once when api.mode is live (for supervisord)")
    args = ap.parse_args(argv)
    try:
        cfg = load_config(args.config)
        sim_cfg = cfg.section("sim", SimConfig)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.only_in_sim_mode and cfg.api.mode == "live":
        print("api.mode is live: the simulator is not started", file=sys.stderr)
        return 0
    updates = {k: v for k, v in (("port", args.port), ("speed", args.speed)) if v is not None}
    sim_cfg = sim_cfg.model_copy(update=updates)
    market_clock = _MarketClock()   # the sim's log lines carry its market time, like the services'
    setup_logging("sim", cfg.path(cfg.logging.dir), cfg.logging.level, clock=market_clock,
                  console=cfg.logging.console)
    spec = sim_cfg.contract or cfg.trading.contract
    inst = INSTRUMENTS[spec] if spec in INSTRUMENTS else instrument_for(spec)
    api_key = sim_cfg.api_key or os.environ.get("TOPSTEPX_API_KEY") or "sim-key"
    register_secret(api_key)
    data = cfg.path(sim_cfg.data)
    try:
        ticks = load_ticks(data, inst)
    except (OSError, ValueError, KeyError) as exc:
        print(f"sim: cannot load market data {data}: {exc}", file=sys.stderr)
        return 2
    offset = shift_for(ticks, sim_cfg.time_mode, sim_cfg.start_at, time.time_ns())
    # "today" is the market's, from the data's first tick as shifted, never the wall clock
    start_day = to_ny(ticks[0].ts_ns + offset + int(sim_cfg.start_offset_s * 1e9)).date()
    contract = quarterly_months(inst.symbol, start_day)[0] if spec in INSTRUMENTS else spec
    if is_expired(contract, start_day):
        print(f"sim: contract {contract} expired on {expiry_date(contract)}, before the market day {start_day}; "
              f"set sim.contract (or trading.contract) to the symbol {inst.symbol} or a later month", file=sys.stderr)
        return 2
    sim = Simulator(sim_cfg, contract, ticks, offset, api_key)
    market_clock.sim = sim
    tls = None
    if sim_cfg.tls_cert:
        try:
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(cfg.path(sim_cfg.tls_cert), cfg.path(sim_cfg.tls_key) if sim_cfg.tls_key else None)
        except (OSError, ssl.SSLError) as exc:
            print(f"sim: cannot load the TLS certificate {sim_cfg.tls_cert}: {exc}", file=sys.stderr)
            return 2
    logger.info(f"SIM: serving {contract} from {data.name} ({len(ticks)} ticks, derived quotes) on "
                f"{'https' if tls else 'http'}://{sim_cfg.host}:{sim_cfg.port} speed {sim_cfg.speed or 'max'} time_mode {sim_cfg.time_mode}")
    web.run_app(build_app(sim), host=sim_cfg.host, port=sim_cfg.port, print=None, access_log=None, ssl_context=tls,
                handle_signals=True, shutdown_timeout=2)
    return 0


class _MarketClock:
    """now_ns() of the simulator's market (0 until it runs: the logger then uses the wall clock)."""
    sim = None

    def now_ns(self) -> int:
        return self.sim.engine.now_ns if self.sim is not None else 0


if __name__ == "__main__":
    sys.exit(main())
