"""Replay a tick recording into the feed socket, as the live feed would publish it.

    python -m services.replay RECORDING [--config PATH] [--speed N|max] [--from T --to T]

T is HH:MM[:SS] New York time on the recording's day, or an ISO-8601 timestamp.
Exit 0 when the recording is done, 2 on a bad config or an unreadable recording.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime
from pathlib import Path

from loguru import logger

from common.bus import Publisher
from common.clock import NY, EventClock, from_dt, to_ny
from common.config import ConfigError, load_config
from common.logging import setup_logging
from common.messages import FeedStatus
from common.recording import RecordingError, read_header, read_recording
from common.ticks.feed_core import FeedCore
from services.replay.config import FeedSanitizerKeys, ReplayConfig
from services.replay.player import Player

SERVICE = "feed"   # downstream sees the same publisher name as live


def parse_when(text: str | None, day_of_ns: int) -> int | None:
    """'10:15' / '10:15:30' (New York, on the recording's day) or ISO-8601 -> ns."""
    if not text:
        return None
    for fmt in ("%H:%M", "%H:%M:%S"):
        try:
            t = datetime.strptime(text, fmt).time()
            return from_dt(datetime.combine(to_ny(day_of_ns).date(), t, NY))
        except ValueError:
            pass
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=NY)
    return from_dt(dt)


def parse_speed(text: str) -> float | None:
    if text.lower() == "max":
        return None
    speed = float(text)
    if speed <= 0:
        raise ValueError("speed must be > 0 or 'max'")
    return speed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m services.replay", description=__doc__.splitlines()[0])
    ap.add_argument("recording")
    ap.add_argument("--config", default=None)
    ap.add_argument("--speed", default="1", help="N times real time, or 'max' (default 1)")
    ap.add_argument("--from", dest="start", default=None)
    ap.add_argument("--to", dest="end", default=None)
    args = ap.parse_args(argv)
    try:
        cfg = load_config(args.config)
        rcfg = cfg.section("replay", ReplayConfig)
        fcfg = cfg.section("feed", FeedSanitizerKeys)
        speed = parse_speed(args.speed)
    except (ConfigError, ValueError) as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return 2
    path = Path(args.recording)
    try:
        header = read_header(path)
        first = next(iter(read_recording(path)), None)
    except (OSError, RecordingError) as exc:
        print(f"replay: cannot read {path}: {exc}", file=sys.stderr)
        return 2
    if first is None:
        print(f"replay: {path} holds no records", file=sys.stderr)
        return 2
    try:
        start_ns = parse_when(args.start, first.recv_ns)
        end_ns = parse_when(args.end, first.recv_ns)
    except ValueError as exc:
        print(f"replay: bad --from/--to: {exc}", file=sys.stderr)
        return 2
    clock = EventClock()
    setup_logging("replay", cfg.logging.dir, cfg.logging.level, clock=clock, console=cfg.logging.console)
    contract = header.get("contract") or cfg.trading.contract
    try:
        pub = Publisher(SERVICE, cfg.bus.feed_pub, cfg.bus.feed_snap, clock=lambda: clock.now_ns() or time.time_ns())
    except OSError as exc:
        logger.error(f"BUS: refusing to start: {exc}")
        return 2

    def publish(msg, **kw) -> None:
        if kw.get("ts_ns"):
            clock.advance(kw["ts_ns"])
        pub.publish(msg, **kw)
        while pub.snap is not None and pub.snap.poll(0):   # answer snapshot requests as we go
            pub.serve_snapshot()

    core = FeedCore(contract, publish, cross_tolerance_ticks=fcfg.cross_tolerance_ticks,
                    jump_ticks=fcfg.jump_ticks, jump_confirm=fcfg.jump_confirm)

    def heartbeat(exch_ns: int) -> None:
        clock.advance(exch_ns)
        stats = core.stats()
        stats["replay"] = str(path)
        pub.heartbeat("ok", exch_ns=exch_ns, stats=stats)

    player = Player(core, publish, heartbeat, speed=speed, start_ns=start_ns, end_ns=end_ns,
                    max_rate=rcfg.max_rate, burst=rcfg.burst, gap_heartbeats=rcfg.gap_heartbeats)
    logger.info(f"REPLAY: {path} ({contract}) at speed {args.speed} -> {cfg.bus.feed_pub}")
    _serve_for(pub, rcfg.start_delay_s)
    try:
        stats = player.run(read_recording(path))
    except KeyboardInterrupt:
        logger.warning("REPLAY: interrupted")
        pub.close()
        return 130
    publish(FeedStatus("down", "end of recording"), key="feed", ts_ns=player.now_ns or None)
    _serve_for(pub, rcfg.linger_s)
    logger.info(f"REPLAY: done: {stats.records} records, {stats.messages} messages, {stats.heartbeats} heartbeats "
                f"in {stats.wall_s:.2f} s; bad ticks {json.dumps(dict(core.sanitizer.counts))}")
    pub.close()
    return 0


def _serve_for(pub: Publisher, seconds: float) -> None:
    """Answer snapshot requests while waiting (subscribers connecting or draining)."""
    end = time.monotonic() + seconds
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return
        if pub.snap is not None and pub.snap.poll(int(min(left, 0.05) * 1000) or 1):
            pub.serve_snapshot()
        elif pub.snap is None:
            time.sleep(min(left, 0.05))


if __name__ == "__main__":
    sys.exit(main())
