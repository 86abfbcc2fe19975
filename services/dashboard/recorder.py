"""The day's market and model record for the session report: `logs/session_DAY.jsonl`.

The keeper's files hold the trades; the report also wants the price the trades were made
against, how confident the model was when it traded and when it did not, and each entry's
hop chain. The dashboard already hears all of that on the bus, so it appends one JSON line
per one-minute bar, per directional prediction, per signal and per entry's hop chain:

    {"t": "meta", "contract": "CON.F.US.MES.H26"}       (each time the file is opened)
    {"t": "bar", "ns": ..., "o": ticks, "h": ..., "l": ..., "c": ...}
    {"t": "pred", "ns": bar start, "dir": 1, "conf": 0.71}
    {"t": "signal", "ns": ..., "kind": "LONG_ENTRY", "id": "LE1763997000", "conf": 0.71}
    {"t": "hops", "ns": first stage, "feed": us, "bar_wait": us, ...}

`records(env)` is pure (envelope -> [(day, record)]); `SessionRecorder` is the file edge.
"""
from __future__ import annotations

import json
from pathlib import Path

from common.clock import to_ny
from common.messages import Bar, Envelope, Heartbeat, Prediction, Signal


def ny_day(ns: int) -> str:
    return to_ny(ns).strftime("%Y-%m-%d")


def session_path(log_dir: Path, day: str) -> Path:
    return Path(log_dir) / f"session_{day}.jsonl"


class Records:
    """Envelope -> the records worth keeping; remembers which hop chains it has written."""

    def __init__(self, contract: str):
        self.contract = contract
        self.hops_seen: set[int] = set()

    def __call__(self, env: Envelope) -> list[tuple[str, dict]]:
        m = env.msg
        if env.snapshot and not isinstance(m, Heartbeat):
            return []                       # a snapshot repeats what was recorded already
        if isinstance(m, Bar) and m.interval_s == 60 and m.contract == self.contract:
            return [(ny_day(m.start_ns), {"t": "bar", "ns": m.start_ns, "o": m.open_ticks, "h": m.high_ticks,
                                          "l": m.low_ticks, "c": m.close_ticks})]
        if isinstance(m, Prediction) and m.direction != 0 and m.contract == self.contract:
            return [(ny_day(m.bar_start_ns), {"t": "pred", "ns": m.bar_start_ns, "dir": m.direction,
                                              "conf": round(m.confidence, 4)})]
        if isinstance(m, Signal) and env.ts_ns:
            return [(ny_day(env.ts_ns), {"t": "signal", "ns": env.ts_ns, "kind": m.kind, "id": m.signal_id,
                                         "conf": round(m.confidence, 4)})]
        if isinstance(m, Heartbeat) and m.service == "orders":
            out = []
            for chain in m.stats.get("hops_recent") or []:
                at = chain.get("at_ns") if isinstance(chain, dict) else None
                if isinstance(at, int) and at not in self.hops_seen:
                    self.hops_seen.add(at)
                    out.append((ny_day(m.exch_ns or at), {"t": "hops", "ns": at,
                                                          **{k: v for k, v in chain.items() if k != "at_ns"}}))
            return out
        return []


class SessionRecorder:
    """Appends records to session_DAY.jsonl, one line each, flushed so a crash loses little."""

    def __init__(self, log_dir: Path, contract: str):
        self.log_dir = Path(log_dir)
        self.records = Records(contract)
        self.files: dict[str, object] = {}

    def write(self, env: Envelope) -> int:
        got = self.records(env)
        for day, rec in got:
            f = self.files.get(day)
            if f is None:
                for old in self.files.values():
                    old.close()
                self.files.clear()
                self.log_dir.mkdir(parents=True, exist_ok=True)
                f = self.files[day] = open(session_path(self.log_dir, day), "a", encoding="utf-8")
                f.write(json.dumps({"t": "meta", "contract": self.records.contract}) + "\n")
            f.write(json.dumps(rec, separators=(",", ":")) + "\n")
        if got:
            for f in self.files.values():
                f.flush()
        return len(got)

    def close(self) -> None:
        for f in self.files.values():
            f.close()
        self.files.clear()
