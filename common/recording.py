"""Tick recordings: every raw market-hub event with its receive time, in one file per day.

Format (stable; the simulator reads it too): a sequence of records, each a 4-byte
big-endian length followed by one msgpack map. The first record is a header
`{"format": "scalper-rec", "v": 1, "contract": ..., "created_ns": ...}`; every
other record is `{"t": recv_ns, "e": target, "a": arguments}` where target is the
hub event name ("GatewayQuote", "GatewayTrade", ...) and arguments are exactly what
the hub sent (`[contractId, data]`), or target "#status" with arguments
`[state, detail]` for a connection state change of the feed.

A file killed mid-write (kill -9) ends with a truncated record: the reader stops
there silently. A corrupt record in the middle is skipped by its length.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterator

import msgpack

FORMAT = "scalper-rec"
VERSION = 1
STATUS = "#status"
_LEN = struct.Struct(">I")
MAX_RECORD = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Record:
    recv_ns: int
    target: str
    args: list


class RecordingError(ValueError):
    """Not a recording (wrong header): says which file."""


def read_header(path: str | os.PathLike) -> dict:
    with open(path, "rb") as f:
        got = _next(f)
    if not isinstance(got, dict) or got.get("format") != FORMAT:
        raise RecordingError(f"{path}: not a tick recording (no {FORMAT} header)")
    return got


def read_recording(path: str | os.PathLike) -> Iterator[Record]:
    """Every record after the header, in file order. Truncated tail tolerated."""
    with open(path, "rb") as f:
        head = _next(f)
        if not isinstance(head, dict) or head.get("format") != FORMAT:
            raise RecordingError(f"{path}: not a tick recording (no {FORMAT} header)")
        while True:
            got = _next(f)
            if got is _END:
                return
            if not isinstance(got, dict):
                continue
            t, e, a = got.get("t"), got.get("e"), got.get("a")
            if isinstance(t, int) and isinstance(e, str) and isinstance(a, list):
                yield Record(t, e, a)


_END = object()
_BAD = object()


def _next(f) -> Any:
    head = f.read(4)
    if len(head) < 4:
        return _END
    (n,) = _LEN.unpack(head)
    if n > MAX_RECORD:
        return _END          # garbage length: nothing after it can be trusted
    body = f.read(n)
    if len(body) < n:
        return _END
    try:
        return msgpack.unpackb(body, raw=False, strict_map_key=False)
    except Exception:
        return _BAD


def pack(obj: dict) -> bytes:
    body = msgpack.packb(obj, use_bin_type=True)
    return _LEN.pack(len(body)) + body


class RecordingWriter:
    """Append-only writer for one file. Buffered; call flush() at least every second."""

    def __init__(self, path: str | os.PathLike, contract: str, created_ns: int):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists() or self.path.stat().st_size == 0
        self.f = open(self.path, "ab", buffering=1 << 16)
        if new:
            self.f.write(pack({"format": FORMAT, "v": VERSION, "contract": contract, "created_ns": created_ns}))
        self.records = 0

    def write(self, recv_ns: int, target: str, args: list) -> None:
        self.f.write(pack({"t": recv_ns, "e": target, "a": args}))
        self.records += 1

    def flush(self) -> None:
        self.f.flush()

    def close(self) -> None:
        self.f.close()


class DailyRecorder:
    """One recording per New York day under `directory`: <CONTRACT-NAME>_<YYYY-MM-DD>.rec."""

    def __init__(self, directory: str | os.PathLike, contract: str):
        from common.instruments import contract_name
        self.directory = Path(directory)
        self.contract = contract
        self.name = contract_name(contract)
        self.day = ""
        self._day_span = (0, 0)       # [start, end) ns of self.day: the NY date is worked out once a day
        self.writer: RecordingWriter | None = None
        self.errors = 0

    def path_for(self, day: str) -> Path:
        return self.directory / f"{self.name}_{day}.rec"

    def write(self, recv_ns: int, target: str, args: list) -> None:
        start, end = self._day_span
        if not start <= recv_ns < end or self.writer is None:
            self._open_day(recv_ns)
        self.writer.write(recv_ns, target, args)

    def _open_day(self, recv_ns: int) -> None:
        """The NY date of recv_ns and its span (a time-zone conversion per record cost the feed
        ~10 us a tick, and a burst of ticks waits for every one before it)."""
        from common.clock import NY, to_ny
        local = to_ny(recv_ns)
        day = local.date().isoformat()
        midnight = local.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
        start = int(midnight.replace(tzinfo=NY).timestamp()) * 1_000_000_000
        end = int((midnight + timedelta(days=1)).replace(tzinfo=NY).timestamp()) * 1_000_000_000
        self._day_span = (start, end)
        if day != self.day or self.writer is None:
            if self.writer is not None:
                self.writer.close()
            self.writer = RecordingWriter(self.path_for(day), self.contract, recv_ns)
            self.day = day

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
