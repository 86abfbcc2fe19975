"""A hand-built feed recording with real sizes, sides and quotes (spreads of 1-3 ticks)."""
from __future__ import annotations

import random
from datetime import datetime, timezone
from pathlib import Path

from services.replay.recording import RecordingWriter

CONTRACT = "CON.F.US.MES.M18"
T0 = 1_525_701_600 * 1_000_000_000       # 2018-05-07 10:00:00 EDT


def iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f") + "+00:00"


def write_recording(path: Path, minutes: int = 8, seed: int = 1, start_ns: int = T0) -> Path:
    rng = random.Random(seed)
    w = RecordingWriter(path, CONTRACT, start_ns)
    mid = 2700 * 4
    t = start_ns
    end = start_ns + minutes * 60 * 1_000_000_000
    while t < end:
        t += rng.randint(50, 900) * 1_000_000
        mid += rng.choice((-1, 0, 0, 1))
        spread = rng.choice((1, 1, 1, 2, 3))
        bid, ask = mid, mid + spread
        w.write(t, "GatewayQuote", [CONTRACT, {"symbol": "F.US.MES", "bestBid": bid / 4, "bestAsk": ask / 4,
                                               "lastPrice": bid / 4, "timestamp": iso(t)}])
        if rng.random() < 0.7:
            buy = rng.random() < 0.5
            w.write(t, "GatewayTrade", [CONTRACT, [{"symbolId": "F.US.MES", "price": (ask if buy else bid) / 4,
                                                    "timestamp": iso(t), "type": 0 if buy else 1,
                                                    "volume": rng.randint(1, 25)}]])
    w.close()
    return path
