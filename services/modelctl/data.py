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


# ---------------------------------------------------------------- cache
# Normalizing a session through FeedCore costs ~10 s; the result depends only on the file and
# on the code that reads it, so it is kept under logs/cache/ keyed by both hashes.
CACHE_DIR = Path(__file__).resolve().parents[2] / "logs" / "cache" / "messages"
_READERS = ("services/feed/normalize.py", "services/feed/sanitize.py", "services/feed/core.py",
            "services/replay/convert.py", "services/modelctl/data.py")


def _code_hash() -> str:
    root = Path(__file__).resolve().parents[2]
    h = hashlib.sha256()
    for rel in _READERS:
        p = root / rel
        h.update(p.read_bytes() if p.is_file() else rel.encode())
    return h.hexdigest()[:16]


def _cache_path(digest: str, contract: str) -> Path:
    return CACHE_DIR / f"{digest[:32]}-{contract}-{_code_hash()}.npz"


def _save(path: Path, contract: str, msgs: list) -> None:
    import numpy as np
    n = len(msgs)
    kind = np.zeros(n, dtype=np.int8)          # 0 quote, 1 trade
    cols = {k: np.zeros(n, dtype=np.int64) for k in ("a", "b", "c", "d", "exch", "recv", "flags")}
    for i, m in enumerate(msgs):
        if isinstance(m, Trade):
            kind[i] = 1
            cols["a"][i], cols["b"][i], cols["c"][i] = m.price_ticks, m.size, m.aggressor
        else:
            cols["a"][i], cols["b"][i], cols["c"][i] = m.bid_ticks, m.ask_ticks, m.last_ticks
        cols["exch"][i], cols["recv"][i], cols["flags"][i] = m.exch_ns, m.recv_ns, m.flags
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, kind=kind, **cols)
    tmp.replace(path)


def _load(path: Path, contract: str) -> list:
    import numpy as np
    with np.load(path) as z:
        kind, a, b, c = z["kind"].tolist(), z["a"].tolist(), z["b"].tolist(), z["c"].tolist()
        ex, rc, fl = z["exch"].tolist(), z["recv"].tolist(), z["flags"].tolist()
    return [Trade(contract, a[i], b[i], c[i], ex[i], rc[i], fl[i]) if kind[i] else
            Quote(contract, a[i], b[i], c[i], ex[i], rc[i], fl[i]) for i in range(len(kind))]


def load_source(path: str | Path, contract: str, cache: bool = True) -> Source:
    """A recording or the shipped CSV; `contract` is the CSV's contract id (a recording says its own)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {path} not found")
    digest = sha256_file(path)
    is_csv = path.name.endswith(CSV_SUFFIXES)
    key_contract = contract if is_csv else (read_header(path).get("contract") or "")
    cached = _cache_path(digest, key_contract)
    if cache and cached.is_file():
        try:
            return Source(path, digest, key_contract, "csv" if is_csv else "recording", _load(cached, key_contract))
        except Exception:
            pass                                # a damaged cache file: read the source again
    src = _read_source(path, digest, contract)
    if cache:
        try:
            _save(cached, src.contract, src.messages)
        except OSError:
            pass
    return src


def _read_source(path: Path, digest: str, contract: str) -> Source:
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
