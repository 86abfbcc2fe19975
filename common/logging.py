"""Logging for every service, set up once: the spec's line format, one file per day.

    2025-01-15 10:30:45.123 [INFO] FILL: BOUGHT 1 MES @ 6050.50

- The timestamp is the service clock in New York time (event time in replay, so a
  replayed session's log reads like the live one).
- logs/trading_YYYY-MM-DD.log is shared by all services. Each line goes out in one
  O_APPEND write(2), which Linux never interleaves with another process's write,
  so two services can never splice their lines.
- logs/<service>.log holds the same lines for one service, tagged with its name.
- Secrets registered with `register_secret` (API key, token) and anything shaped
  like a JWT are replaced before a line is formatted, in every sink.
"""
from __future__ import annotations

import atexit
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

from loguru import logger

from common.clock import Clock, fmt_ny

_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}")
_KEYVAL = re.compile(r"(?i)(api[_-]?key|apikey|token|access_token|authorization)(\"?\s*[:=]\s*\"?)(Bearer\s+)?([^\s\"',&}]+)")
_secrets: set[str] = set()
_lock = threading.Lock()

# loguru appends "\n{exception}" to a string format itself: adding it here gave a blank line
# after every line and every traceback twice
LINE = "{extra[stamp]} [{level}] {message}"
SERVICE_LINE = "{extra[stamp]} [{level}] [{extra[service]}] {message}"


def register_secret(value: str | None) -> None:
    """Never print this string again, in any log line of this process."""
    if value and len(value) >= 4:
        with _lock:
            _secrets.add(value)


def redact(text: str) -> str:
    for s in sorted(_secrets, key=len, reverse=True):
        if s in text:
            text = text.replace(s, "***")
    text = _JWT.sub("<jwt>", text)
    return _KEYVAL.sub(lambda m: f"{m.group(1)}{m.group(2)}***", text)


class _AppendFile:
    """A sink that writes each formatted line with a single O_APPEND write(2).

    With `dated=True` the file is named after the service clock's New York day. Lines logged
    before that clock knows the time (an event clock before its first event) are held, up to
    `HELD_MAX`, and written to the day's file once the day is known, so a session's lines land in
    one file named after its trading day, never in a second one named after the wall-clock date.
    Lines still held at exit go to the wall-clock day's file rather than being lost."""

    HELD_MAX = 5000

    def __init__(self, directory: Path, name_for_day, dated: bool = False):
        self.directory = directory
        self.name_for_day = name_for_day
        self.dated = dated
        self.held: list[bytes] = []
        self.day = ""
        self.fd: int | None = None
        if dated:
            atexit.register(self.flush_held)

    def __call__(self, message: Any) -> None:
        extra = message.record["extra"]
        data = str(message).encode("utf-8", "replace")
        if self.dated and not extra.get("clocked", True):
            if len(self.held) < self.HELD_MAX:
                self.held.append(data)
            return
        self._write(extra["stamp"][:10], data)

    def _write(self, day: str, data: bytes) -> None:
        if day != self.day or self.fd is None:
            if self.fd is not None:
                os.close(self.fd)
            self.directory.mkdir(parents=True, exist_ok=True)
            path = self.directory / self.name_for_day(day)
            self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            self.day = day
        if self.held:
            held, self.held = b"".join(self.held), []
            os.write(self.fd, held)
        os.write(self.fd, data)

    def flush_held(self) -> None:
        if self.held:
            try:
                self._write(self.day or self._session_day(), b"")
            except OSError:
                pass

    def _session_day(self) -> str:
        """The day of the session this process belongs to when its own clock never started: the
        day file another service of the session wrote last, else the wall clock's New York date.
        (Only an event clock holds lines, so this is a simulation or replay session; file times
        are compared with each other, never with the wall clock.)"""
        recent = []
        for path in self.directory.glob(self.name_for_day("*")):
            try:
                recent.append((path.stat().st_mtime, path))
            except OSError:
                continue
        if recent:
            mtime, path = max(recent)
            prefix, suffix = self.name_for_day("\0").split("\0")
            day = path.name[len(prefix):len(path.name) - len(suffix)]
            if len(day) == 10:
                return day
        return fmt_ny(time.time_ns())[:10]


def setup_logging(service: str, log_dir: str | os.PathLike = "logs", level: str = "INFO",
                  clock: Clock | None = None, console: bool = True) -> None:
    """Configure loguru for this process. Safe to call again (e.g. in tests)."""
    directory = Path(log_dir)

    def patch(record: dict) -> None:
        ns = clock.now_ns() if clock is not None else 0
        record["extra"]["stamp"] = fmt_ny(ns or time.time_ns())
        record["extra"]["clocked"] = bool(ns) or clock is None
        record["extra"].setdefault("service", service)
        record["message"] = redact(record["message"])
        if record["exception"] is not None:
            # tracebacks can quote a token in a local variable's repr; keep them off
            record["exception"] = record["exception"]._replace(value=type(record["exception"].value)(
                redact(str(record["exception"].value))) if _safe_exc(record["exception"].value) else
                record["exception"].value)

    logger.remove()
    logger.configure(patcher=patch, extra={"service": service, "stamp": ""})
    if console:
        logger.add(sys.stderr, level=level, format=SERVICE_LINE, colorize=False, backtrace=False, diagnose=False)
    logger.add(_AppendFile(directory, lambda day: f"trading_{day}.log", dated=True), level=level, format=LINE,
               backtrace=False, diagnose=False, enqueue=False)
    logger.add(_AppendFile(directory, lambda day: f"{service}.log"), level="DEBUG" if level == "DEBUG" else level,
               format=SERVICE_LINE, backtrace=False, diagnose=False)


def _safe_exc(exc: BaseException) -> bool:
    try:
        type(exc)(str(exc))
        return True
    except Exception:
        return False
