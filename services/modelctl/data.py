"""Recordings (and the shipped CSV) -> the market messages the live pipeline would have seen.

A `.rec` recording is read record by record and put through `FeedCore`, the feed
gateway's own normalizer and sanitizer, so sizes, sides, quotes and dropped ticks are
the live ones. A trades-only CSV (`ts_utc,price`) is first converted to a recording by
the existing converter (services/replay/convert.py: sizes, sides and quotes are derived,
and say so). Nothing here trains or trades: this module is the edge that reads files.

This package (services/modelctl) is an offline tool like the operator CLI: it reads the
pure modules of several services (feed, inference, engine, positions) and runs no process.
"""
from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path

from common.messages import Quote, Trade

try:                                   # h17 moves the recording format to common/
    from common.recording import STATUS, read_header, read_recording  # type: ignore
except ImportError:                    # pragma: no cover - before that move
    from services.replay.recording import STATUS, read_header, read_recording

CSV_SUFFIXES = (".csv", ".csv.gz")


class DataError(ValueError):
    """A data file that cannot be used; the text names it."""


@dataclass
class Source:
    path: Path
    sha256: str
    contract: str                 # contract id the messages carry
    kind: str                     # recording | csv (derived sizes, sides and quotes)
    messages: list


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def messages_from_recording(path: Path, contract: str | None = None) -> tuple[str, list]:
    """Every Quote/Trade the feed gateway would publish for this recording, in order."""
    from services.feed.core import FeedCore
    from services.feed.sanitize import BadTickLog
    head = read_header(path)
    contract = contract or head.get("contract") or ""
    out: list = []
    core = FeedCore(contract, lambda msg, **kw: out.append(msg), wall_ns=lambda: 0,
                    bad_log=BadTickLog(every_s=1e12))
    for rec in read_recording(path):
        if rec.target != STATUS:
            core.on_event(rec.target, rec.args, rec.recv_ns)
    return contract, [m for m in out if isinstance(m, (Quote, Trade))]


def load_source(path: str | Path, contract: str) -> Source:
    """A recording or the shipped CSV; `contract` is the CSV's contract id (a recording says its own)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {path} not found")
    digest = sha256_file(path)
    if path.name.endswith(CSV_SUFFIXES):
        from services.replay.convert import convert
        with tempfile.TemporaryDirectory() as tmp:
            rec = Path(tmp) / "converted.rec"
            if convert(path, rec, contract) == 0:
                raise DataError(f"{path}: no usable trade in the CSV")
            c, msgs = messages_from_recording(rec, contract)
        return Source(path, digest, c, "csv", msgs)
    try:
        c, msgs = messages_from_recording(path)
    except Exception as exc:
        raise DataError(f"{path}: not a readable recording ({exc})") from None
    if not msgs:
        raise DataError(f"{path}: the recording holds no quote or trade")
    return Source(path, digest, c, "recording", msgs)
