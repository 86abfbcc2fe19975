"""Recorded ticks for the simulator, and the rule that derives what the data lacks.

The real data (data/real/) holds trade prices and times only. The simulator
derives the rest, deterministically:
- aggressor by the tick rule: a trade above the previous price is a buy (lifted the
  ask), below is a sell (hit the bid), equal keeps the previous side (first: buy);
- the quote around each trade: after a buy, ask = price and bid = price - 1 tick;
  after a sell, bid = price and ask = price + 1 tick (so the spread is always one tick);
- trade size: 1 + (i * 2654435761 >> 16) % 4, i the trade's index (1 to 4 lots, fixed
  per index, so two runs are identical).
These are derived, not recorded: say so wherever the numbers are shown.
"""
from __future__ import annotations

import csv
import gzip
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from pathlib import Path

from common.clock import NY, from_dt, to_ny
from common.instruments import Instrument
from common.messages import Quote, Trade
from common.recording import STATUS, read_header, read_recording
from common.ticks.normalize import Normalizer

NS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Tick:
    ts_ns: int
    price: int       # ticks
    size: int
    aggressor: int   # 0 buy, 1 sell (TopstepX TradeLogType)
    bid: int
    ask: int


def _parse_ts(s: str) -> int:
    s = s.strip().replace("Z", "+00:00")
    dt = datetime.fromisoformat(s)
    return from_dt(dt)


def load_csv(path: str | Path, inst: Instrument) -> list[Tick]:
    """ts_utc,price CSV (optionally gzipped) -> ticks with derived side, quote and size."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    ticks: list[Tick] = []
    prev = None
    side = 0
    with opener(path, "rt", newline="") as fh:
        for i, row in enumerate(csv.DictReader(fh)):
            px = inst.to_ticks_rounded(row["price"])
            if prev is not None:
                if px > prev:
                    side = 0
                elif px < prev:
                    side = 1
            prev = px
            bid, ask = (px - 1, px) if side == 0 else (px, px + 1)
            size = 1 + ((i * 2654435761) >> 16) % 4
            ticks.append(Tick(_parse_ts(row["ts_utc"]), px, size, side, bid, ask))
    if not ticks:
        raise ValueError(f"{path}: no ticks")
    return ticks


def load_ticks(path: str | Path, inst: Instrument) -> list[Tick]:
    """A recording of the feed (common/recording.py) or a ts,price CSV."""
    p = str(path)
    if p.endswith(".csv") or p.endswith(".csv.gz"):
        return load_csv(path, inst)
    return ticks_from_recording(path)


def ticks_from_recording(path: str | Path) -> list[Tick]:
    """A feed recording (common/recording.py) -> the simulator's tape: one tick per
    trade, with the book from the latest quote (or one tick around the trade by the tick
    rule when no quote was seen yet), side 0 buy / 1 sell (unknown aggressor: the tick
    rule). Uses the feed's own normalizer, so the sim replays what the feed understood;
    the contract comes from the recording header."""
    header = read_header(path)
    norm = Normalizer(header.get("contract") or "")
    out: list[Tick] = []
    bid = ask = None
    prev = None
    side = 0
    for rec in read_recording(path):
        if rec.target == STATUS:
            continue
        for t in norm.on_event(rec.target, rec.args, rec.recv_ns):
            m = t.msg
            if isinstance(m, Quote):
                if m.bid_ticks < m.ask_ticks:
                    bid, ask = m.bid_ticks, m.ask_ticks
                continue
            if not isinstance(m, Trade) or m.size <= 0 or "bad_price" in t.issues:
                continue
            if m.aggressor:
                side = 0 if m.aggressor > 0 else 1
            elif prev is not None and m.price_ticks != prev:
                side = 0 if m.price_ticks > prev else 1
            prev = m.price_ticks
            if bid is None or not (bid <= m.price_ticks <= ask):
                b, a = (m.price_ticks - 1, m.price_ticks) if side == 0 else (m.price_ticks, m.price_ticks + 1)
            else:
                b, a = bid, ask
            out.append(Tick(m.exch_ns, m.price_ticks, m.size, side, b, a))
    if not out:
        raise ValueError(f"{path}: no trades in the recording")
    return out


def shift_for(ticks: list[Tick], time_mode: str, start_at: str | None, now_ns: int) -> int:
    """Offset (ns) added to every data timestamp."""
    first = ticks[0].ts_ns
    if time_mode == "keep":
        return 0
    if time_mode == "now":
        return now_ns - first
    if start_at:
        dt = datetime.fromisoformat(start_at)
        dt = dt.replace(tzinfo=NY) if dt.tzinfo is None else dt
        return from_dt(dt) - first
    # start_at mode without a date: the data's own time of day on the latest full CME trading
    # day (not a weekend, holiday or early close), so a demo run on Thanksgiving still trades
    tod: time = to_ny(first).time()
    day = latest_full_session(to_ny(now_ns).date())
    return from_dt(datetime.combine(day, tod, NY)) - first


def latest_full_session(day):
    from common.session import SessionCalendar
    cal = SessionCalendar(time(9, 30), time(16, 30), time(16, 25))
    for _ in range(14):
        t = cal.times(day)
        if t.is_trading_day and not t.early_close:
            return day
        day -= timedelta(days=1)
    return day


class Replay:
    """Walks the ticks in order, looping with shifted times, paced by `speed`.

    speed <= 0 means as fast as the consumers take them. `due_in(wall)` says how long
    (wall seconds) until the next tick is due.
    """

    def __init__(self, ticks: list[Tick], offset_ns: int, speed: float, loop: bool, start_offset_s: float = 0):
        self.ticks = ticks
        self.offset = offset_ns
        self.speed = speed
        self.loop = loop
        self.span = ticks[-1].ts_ns - ticks[0].ts_ns + NS
        self.i = 0
        self.laps = 0
        first = ticks[0].ts_ns + int(start_offset_s * NS)
        while self.i < len(ticks) and ticks[self.i].ts_ns < first:
            self.i += 1
        self.t0_data = self.ts(self.i) if self.i < len(ticks) else ticks[0].ts_ns + offset_ns
        self.t0_wall: float | None = None
        self.paused_wall = 0.0
        self.finished = False

    def ts(self, i: int) -> int:
        return self.ticks[i].ts_ns + self.offset + self.laps * self.span

    def start(self, wall: float) -> None:
        self.t0_wall = wall

    def delay(self, seconds: float) -> None:
        """Hold the tape (stall / pause): everything after shifts by `seconds` of wall time."""
        if self.t0_wall is not None:
            self.t0_wall += seconds

    def set_speed(self, speed: float, wall: float) -> None:
        """Change the pace from now on: the tape keeps its place (a benchmark warms the features
        up fast, then measures at one bar a second)."""
        if self.t0_wall is not None:
            if self.speed > 0:
                self.t0_data = int(self.t0_data + (wall - self.t0_wall) * self.speed * NS)
            else:
                self.t0_data = self.next_ts()
            self.t0_wall = wall
        self.speed = speed

    def next_ts(self) -> int:
        """Shifted time of the tick next() returns (the next lap's first one at the end)."""
        if self.i < len(self.ticks):
            return self.ts(self.i)
        return self.ticks[0].ts_ns + self.offset + (self.laps + 1) * self.span

    def due_in(self, wall: float) -> float:
        if self.finished:
            return 3600.0
        if self.speed <= 0 or self.t0_wall is None:
            return 0.0
        if self.i >= len(self.ticks) and not self.loop:
            return 0.0                  # next() ends the tape
        target = self.t0_wall + (self.next_ts() - self.t0_data) / NS / self.speed
        return max(0.0, target - wall)

    def next(self) -> tuple[int, Tick] | None:
        """(shifted ts, tick) of the next tick, advancing; None at the end."""
        if self.finished:
            return None
        if self.i >= len(self.ticks):
            if not self.loop:
                self.finished = True
                return None
            self.i = 0
            self.laps += 1
        tick = self.ticks[self.i]
        ts = self.ts(self.i)
        self.i += 1
        return ts, tick
