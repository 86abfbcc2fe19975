"""Dashboard process: every publisher's SUB -> one view -> one page on loopback.

    python -m services.dashboard --config config/live_trading.yaml

It places nothing: it reads the bus, asks the position keeper for the day's round trips
when it joined late, and forwards the page's halt / resume / flatten to the engine and the
order gateway exactly as `scalper halt|resume|flatten` does. Refuses to start (exit 2, one
line) on a bad config, e.g. a non-loopback host without allow_remote and a token.
"""
from __future__ import annotations

import asyncio
import signal
import sys
import time

from aiohttp import web
from loguru import logger

from common import operator_commands as operator
from common.bus import LATEST_ONLY_HWM, Subscriber
from common.messages import Query, RoundTrip
from common.service import boot
from services.dashboard.config import DashboardConfig
from services.dashboard.recorder import SessionRecorder
from services.dashboard.server import make_app
from services.dashboard.state import SERVICES, DashboardState

SERVICE = "dashboard"


def subscribers(cfg) -> list[Subscriber]:
    subs = []
    for name in SERVICES:
        hwm = LATEST_ONLY_HWM if name == "feed" else 100_000   # quotes: only the latest matters
        topics = ["Quote", "FeedStatus", "Heartbeat"] if name == "feed" else []
        subs.append(Subscriber(SERVICE, getattr(cfg.bus, f"{name}_pub"), getattr(cfg.bus, f"{name}_snap"),
                               topics=topics, hwm=hwm))
    return subs


def keeper_trades(cfg, timeout_ms: int) -> list[RoundTrip]:
    """The day's round trips from the keeper's query socket (a read; blocking: run in a thread)."""
    from common.bus import LazyPirateClient, ServiceUnavailable
    client = LazyPirateClient(SERVICE, cfg.bus.positions_query, timeout_ms=timeout_ms, retries=0)
    try:
        rep = client.request(Query("trades")).msg
    except ServiceUnavailable:
        return []
    finally:
        client.close()
    if not getattr(rep, "ok", False):
        return []
    return [RoundTrip(**t) for t in rep.data.get("trades", [])]


async def run(cfg, sect: DashboardConfig) -> int:
    contract = cfg.trading.contract
    state = DashboardState(contract, cfg.risk.max_daily_loss_cents, stale_s=sect.stale_s, bars_kept=sect.bars,
                           recent=sect.recent)
    recorder = SessionRecorder(cfg.path(cfg.logging.dir), contract) if sect.record else None
    subs = subscribers(cfg)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    asking = []

    def view() -> dict:
        v = state.view(time.monotonic())
        v["server_ns"] = time.time_ns()
        return v

    async def command(action: str, reason: str) -> list[dict]:
        logger.warning(f"DASHBOARD: operator {action} from the page ({reason})")
        answers = await loop.run_in_executor(None, lambda: operator.send(cfg, action, reason, sect.command_timeout_ms))
        for a in answers:
            logger.info(f"DASHBOARD: {action}: {a.line()}")
        return [{"target": a.target, "answered": a.answered, "ok": a.ok, "message": a.message} for a in answers]

    async def fetch_trades() -> None:
        try:
            trips = await loop.run_in_executor(None, keeper_trades, cfg, 2000)
            state.add_trips(trips)
        finally:
            asking.clear()

    async def pump() -> None:
        last_check = 0.0
        while not stop.is_set():
            now = time.monotonic()
            for sub in subs:
                for env in sub.drain(5000):
                    state.apply(env, now)
                    if recorder is not None:
                        try:
                            recorder.write(env)
                        except OSError as exc:
                            logger.error(f"DASHBOARD: cannot write the session record: {exc}")
            if now - last_check > 2.0 and state.missing_trips() and not asking:
                last_check = now
                asking.append(1)
                loop.create_task(fetch_trades())
            await asyncio.sleep(sect.poll_ms / 1000)

    token = sect.token.get_secret_value() if sect.token else None
    loopback_names = None if sect.allow_remote else {"127.0.0.1", "localhost", "::1", sect.host}
    app = make_app(view, command, token=token, push_s=sect.push_s, allowed_hosts=loopback_names)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, sect.host, sect.port)
    try:
        await site.start()
    except OSError as exc:
        logger.error(f"DASHBOARD: cannot listen on {sect.host}:{sect.port}: {exc.strerror or exc}")
        await runner.cleanup()
        return 2
    port = site._server.sockets[0].getsockname()[1] if site._server and site._server.sockets else sect.port
    logger.info(f"DASHBOARD: http://{sect.host}:{port}/ ({'token required' if token else 'loopback, no token'}); "
                f"reading {', '.join(SERVICES)}; contract {contract}")
    task = loop.create_task(pump())
    await stop.wait()
    task.cancel()
    await runner.cleanup()
    for s in subs:
        s.close()
    if recorder is not None:
        recorder.close()
    logger.info("DASHBOARD: stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    cfg, sect, _clock = boot(SERVICE, DashboardConfig, argv, __doc__)
    return asyncio.run(run(cfg, sect))


if __name__ == "__main__":
    sys.exit(main())
