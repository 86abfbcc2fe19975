"""Logging: the spec's line format on the service clock's New York time, one trading log per day,
secrets redacted, and two processes appending to the same log never splice a line."""
from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from datetime import datetime
from pathlib import Path

import pytest
from loguru import logger

import common.logging as clog
from common.clock import NY, EventClock, from_dt
from common.logging import redact, register_secret, setup_logging

ROOT = Path(__file__).resolve().parents[2]
STAMP = r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3}"
LINE_RE = re.compile(rf"^{STAMP} \[(TRACE|DEBUG|INFO|SUCCESS|WARNING|ERROR|CRITICAL)\] .*$")
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ0cmFkZXIiLCJleHAiOjE3NjR9.c2lnbmF0dXJlLWJ5dGVz"


@pytest.fixture(autouse=True)
def clean_loguru(monkeypatch):
    monkeypatch.setattr(clog, "_secrets", set())
    yield
    logger.remove()
    logger.configure(patcher=None, extra={})
    logger.add(sys.stderr)


def at(*args) -> int:
    return from_dt(datetime(*args, tzinfo=NY))


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_spec_line_format_in_the_trading_log_of_the_clock_day(tmp_path):
    clock = EventClock(at(2025, 1, 15, 10, 30, 45, 123_456))
    setup_logging("engine", tmp_path / "logs", clock=clock, console=False)
    logger.info("SIGNAL: LONG_ENTRY MES conf 0.71")
    logger.warning("BREAKER: stale feed")
    logger.debug("not at INFO")
    trading = tmp_path / "logs" / "trading_2025-01-15.log"
    assert lines(trading) == [
        "2025-01-15 10:30:45.123 [INFO] SIGNAL: LONG_ENTRY MES conf 0.71",
        "2025-01-15 10:30:45.123 [WARNING] BREAKER: stale feed",
    ]
    assert lines(tmp_path / "logs" / "engine.log") == [
        "2025-01-15 10:30:45.123 [INFO] [engine] SIGNAL: LONG_ENTRY MES conf 0.71",
        "2025-01-15 10:30:45.123 [WARNING] [engine] BREAKER: stale feed",
    ]


def test_event_time_picks_the_day_file_in_new_york(tmp_path):
    # 23:59:59.999 New York on the 25th is already the 26th in UTC; the log follows New York
    clock = EventClock(at(2026, 11, 25, 23, 59, 59, 999_999))
    setup_logging("feed", tmp_path, clock=clock, console=False)
    logger.info("last of the day")
    clock.advance(at(2026, 11, 26, 0, 0, 0, 1_000))
    logger.info("first of the next")
    assert lines(tmp_path / "trading_2026-11-25.log") == ["2026-11-25 23:59:59.999 [INFO] last of the day"]
    assert lines(tmp_path / "trading_2026-11-26.log") == ["2026-11-26 00:00:00.001 [INFO] first of the next"]
    assert len(lines(tmp_path / "feed.log")) == 2


def test_dst_day_stamps(tmp_path):
    clock = EventClock(at(2026, 3, 8, 1, 59, 59, 500_000))
    setup_logging("x", tmp_path, clock=clock, console=False)
    logger.info("before")
    clock.advance(clock.now_ns() + 1_000_000_000)
    logger.info("after")
    assert lines(tmp_path / "trading_2026-03-08.log") == ["2026-03-08 01:59:59.500 [INFO] before",
                                                          "2026-03-08 03:00:00.500 [INFO] after"]


def test_no_clock_uses_wall_time(tmp_path):
    setup_logging("x", tmp_path, clock=None, console=False)
    logger.info("hello")
    (path,) = tmp_path.glob("trading_*.log")
    (line,) = lines(path)
    assert LINE_RE.match(line) and line.endswith(" [INFO] hello")
    assert path.name == f"trading_{line[:10]}.log"


def test_level_and_console(tmp_path, capfd):
    setup_logging("svc", tmp_path, level="DEBUG", clock=EventClock(at(2026, 11, 25, 9, 30)), console=True)
    logger.debug("dbg")
    err = capfd.readouterr().err
    assert "2026-11-25 09:30:00.000 [DEBUG] [svc] dbg" in err
    assert lines(tmp_path / "trading_2026-11-25.log") == ["2026-11-25 09:30:00.000 [DEBUG] dbg"]


def test_exception_traceback_once_with_no_blank_lines(tmp_path):
    setup_logging("svc", tmp_path, clock=EventClock(at(2026, 11, 25, 9, 30)), console=False)
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("handler failed")
    logger.info("next")
    got = lines(tmp_path / "trading_2026-11-25.log")
    assert got[0] == "2026-11-25 09:30:00.000 [ERROR] handler failed"
    assert got[-1] == "2026-11-25 09:30:00.000 [INFO] next"
    assert sum(line == "ValueError: boom" for line in got) == 1
    assert "" not in got


def test_registered_secrets_and_jwts_are_redacted_everywhere(tmp_path, capfd):
    key = "sk-live-7f3c9a1b2d4e6f80"
    register_secret(key)
    register_secret("abc")          # too short to register: would redact ordinary words
    setup_logging("orders", tmp_path, clock=EventClock(at(2026, 11, 25, 10)), console=True)
    logger.info(f"login with {key} ok")
    logger.info("token {}", JWT)
    logger.info(f"header Authorization: Bearer {JWT}")
    logger.info('{"userName": "t", "apiKey": "plain-key-in-json"}')
    logger.info("url ?access_token=qwerty12345&x=1")
    logger.info("abc is fine")
    try:
        raise RuntimeError(f"auth failed for {key}")
    except RuntimeError:
        logger.exception("AUTH")
    text = (tmp_path / "trading_2026-11-25.log").read_text()
    texts = [text, (tmp_path / "orders.log").read_text(), capfd.readouterr().err]
    for t in texts:
        assert key not in t and JWT not in t and "eyJ" not in t
        assert "plain-key-in-json" not in t and "qwerty12345" not in t
    got = lines(tmp_path / "trading_2026-11-25.log")
    assert got[0] == "2026-11-25 10:00:00.000 [INFO] login with *** ok"
    assert got[1] == "2026-11-25 10:00:00.000 [INFO] token <jwt>"
    assert "abc is fine" in text
    assert "RuntimeError: auth failed for ***" in text


def test_redact_rules():
    register_secret("s3cr3t-value")
    assert redact("x s3cr3t-value y") == "x *** y"
    assert redact(f"jwt {JWT}.") == "jwt <jwt>."
    assert redact("api_key=foo&b=1") == "api_key=***&b=1"
    assert redact("nothing to hide: 6050.25") == "nothing to hide: 6050.25"


WRITER = textwrap.dedent("""
    import sys
    from loguru import logger
    from common.clock import EventClock
    from common.logging import setup_logging
    name, log_dir, n, ts = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    setup_logging(name, log_dir, clock=EventClock(ts), console=False)
    for i in range(n):
        size = (i * 7919) % 3000 + (5000 if i % 97 == 0 else 0)
        logger.info(f"{name} {i} {size} " + name[-1] * size + " END")
""")


def test_two_processes_never_splice_lines(tmp_path):
    n = 2000
    ts = at(2026, 11, 25, 11, 0)
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, f"writer{k}", str(tmp_path), str(n), str(ts)],
                              cwd=ROOT, stderr=subprocess.PIPE) for k in ("a", "b")]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err.decode()
    got = lines(tmp_path / "trading_2026-11-25.log")
    assert len(got) == 2 * n
    seen = {"writera": [], "writerb": []}
    body = re.compile(r"^2026-11-25 11:00:00\.000 \[INFO\] (writer[ab]) (\d+) (\d+) ([ab]*) END$")
    for line in got:
        m = body.match(line)
        assert m, f"spliced or malformed line: {line[:120]!r}..."
        name, i, size, fill = m[1], int(m[2]), int(m[3]), m[4]
        assert fill == name[-1] * size
        seen[name].append(i)
    assert seen["writera"] == list(range(n)) and seen["writerb"] == list(range(n))
    for k in "ab":
        assert len(lines(tmp_path / f"writer{k}.log")) == n


def test_lines_before_the_event_clock_starts_land_in_the_session_day_file(tmp_path):
    """One trading day per session: start-up lines logged before the first event (an event clock
    at 0, whose wall-clock date is days away from the simulator's market day) are held and written
    to the market day's file, in order, instead of opening a second file named after the wall clock."""
    clock = EventClock()
    setup_logging("orders", tmp_path / "logs", clock=clock, console=False)
    logger.info("ORDERS: starting")
    logger.info("ORDERS: journal open")
    assert not list((tmp_path / "logs").glob("trading_*.log"))
    clock.advance(at(2025, 3, 7, 9, 30, 0))
    logger.info("FILL: BOUGHT 1 MES @ 6050.50")
    assert [p.name for p in (tmp_path / "logs").glob("trading_*.log")] == ["trading_2025-03-07.log"]
    got = [line.split("] ", 1)[1] for line in lines(tmp_path / "logs" / "trading_2025-03-07.log")]
    assert got == ["ORDERS: starting", "ORDERS: journal open", "FILL: BOUGHT 1 MES @ 6050.50"]
    assert len(lines(tmp_path / "logs" / "orders.log")) == 3      # the service log never waits


def test_lines_held_at_exit_are_written_not_lost(tmp_path):
    """A process that stops before its event clock ever starts still leaves its lines in a trading log."""
    code = textwrap.dedent(f"""
        from loguru import logger
        from common.clock import EventClock
        from common.logging import setup_logging
        setup_logging("feed", {str(tmp_path / "logs")!r}, clock=EventClock(), console=False)
        logger.info("FEED: no market data before stop")
    """)
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)
    (log,) = (tmp_path / "logs").glob("trading_*.log")
    assert lines(log)[0].endswith("[INFO] FEED: no market data before stop")


def test_a_process_that_never_saw_market_time_joins_the_sessions_day_file(tmp_path):
    """The order gateway exiting before its first event (broker not up yet) leaves its lines in the
    session's day file that the other services write (the simulator's market day), not in a file
    named after the wall clock."""
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "trading_2025-03-07.log").write_text("2025-03-07 09:30:00.000 [INFO] SIM: market open\n")
    code = textwrap.dedent(f"""
        from loguru import logger
        from common.clock import EventClock
        from common.logging import setup_logging
        setup_logging("orders", {str(logs)!r}, clock=EventClock(), console=False)
        logger.error("API: refusing to start: connection failed")
    """)
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)
    assert [p.name for p in logs.glob("trading_*.log")] == ["trading_2025-03-07.log"]
    assert lines(logs / "trading_2025-03-07.log")[1].endswith("[ERROR] API: refusing to start: connection failed")
