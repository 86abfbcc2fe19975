"""Recording format: round trip, truncated tail (kill -9), corrupt record, daily files."""
from __future__ import annotations

import pytest

from common.recording import (
    DailyRecorder, Record, RecordingError, RecordingWriter, pack, read_header, read_recording,
)

C = "CON.F.US.MES.H26"


def test_round_trip(tmp_path):
    p = tmp_path / "a.rec"
    w = RecordingWriter(p, C, 5)
    w.write(10, "GatewayQuote", [C, {"bestBid": 1.25}])
    w.write(11, "GatewayTrade", [C, [{"price": 1.5, "volume": 1}]])
    w.write(12, "#status", ["subscribed", ""])
    w.close()
    assert read_header(p)["contract"] == C
    assert list(read_recording(p)) == [
        Record(10, "GatewayQuote", [C, {"bestBid": 1.25}]),
        Record(11, "GatewayTrade", [C, [{"price": 1.5, "volume": 1}]]),
        Record(12, "#status", ["subscribed", ""]),
    ]


def test_truncated_last_record_is_tolerated(tmp_path):
    p = tmp_path / "a.rec"
    w = RecordingWriter(p, C, 5)
    for i in range(5):
        w.write(i, "GatewayTrade", [C, [{"price": 1.0 + i}]])
    w.close()
    data = p.read_bytes()
    for cut in (1, 3, 7):
        p.write_bytes(data[:-cut])
        assert [r.recv_ns for r in read_recording(p)] == [0, 1, 2, 3]


def test_corrupt_record_in_the_middle_is_skipped(tmp_path):
    p = tmp_path / "a.rec"
    good = pack({"t": 1, "e": "GatewayTrade", "a": [C, []]})
    p.write_bytes(pack({"format": "scalper-rec", "v": 1, "contract": C}) + good
                  + len(b"\xc1\xc1").to_bytes(4, "big") + b"\xc1\xc1" + pack({"x": 1}) + good)
    assert [r.recv_ns for r in read_recording(p)] == [1, 1]


def test_not_a_recording(tmp_path):
    p = tmp_path / "x.rec"
    p.write_bytes(b"hello world")
    with pytest.raises(RecordingError):
        list(read_recording(p))


def test_append_after_restart_keeps_one_header(tmp_path):
    p = tmp_path / "a.rec"
    w = RecordingWriter(p, C, 1)
    w.write(1, "GatewayTrade", [C, []])
    w.close()
    w = RecordingWriter(p, C, 2)
    w.write(2, "GatewayTrade", [C, []])
    w.close()
    assert [r.recv_ns for r in read_recording(p)] == [1, 2]


def test_daily_recorder_rolls_at_new_york_midnight(tmp_path):
    r = DailyRecorder(tmp_path, C)
    from datetime import datetime, timezone
    midnight_ny = int(datetime(2026, 1, 15, 5, tzinfo=timezone.utc).timestamp()) * 10**9
    r.write(midnight_ny - 10**6, "GatewayTrade", [C, []])      # 23:59:59.999 on the 14th
    r.write(midnight_ny + 10**6, "GatewayTrade", [C, []])
    r.close()
    names = sorted(f.name for f in tmp_path.iterdir())
    assert names == ["MESH6_2026-01-14.rec", "MESH6_2026-01-15.rec"]


def test_ticks_from_recording_for_the_simulator(tmp_path):
    from services.sim.market import ticks_from_recording
    p = tmp_path / "a.rec"
    w = RecordingWriter(p, C, 1)
    ts = "2026-01-15T15:30:45.000Z"
    w.write(1, "GatewayQuote", [C, {"bestBid": 5000.0, "bestAsk": 5000.25, "timestamp": ts}])
    w.write(2, "GatewayTrade", [C, [{"price": 5000.25, "volume": 3, "type": 0, "timestamp": ts},
                                    {"price": 5000.0, "volume": 1, "type": 1, "timestamp": ts}]])
    w.write(3, "#status", ["stale", ""])
    w.write(4, "GatewayTrade", [C, {"price": "NaN", "volume": 1}])
    w.close()
    ticks = ticks_from_recording(p)
    assert [(t.price, t.size, t.aggressor, t.bid, t.ask) for t in ticks] == [
        (20001, 3, 0, 20000, 20001), (20000, 1, 1, 20000, 20001)]


def test_daily_recorder_days_across_the_spring_dst_change(tmp_path):
    """The day's span is worked out once a day: a 23-hour day still ends at New York midnight."""
    from datetime import datetime, timezone
    r = DailyRecorder(tmp_path, C)
    start_14th = int(datetime(2027, 3, 14, 5, tzinfo=timezone.utc).timestamp()) * 10**9     # 00:00 EST
    end_14th = int(datetime(2027, 3, 15, 4, tzinfo=timezone.utc).timestamp()) * 10**9       # 00:00 EDT
    for ts in (start_14th - 1, start_14th, start_14th + 3 * 3600 * 10**9, end_14th - 1, end_14th):
        r.write(ts, "GatewayTrade", [C, []])
    r.close()
    counts = {f.name: len(list(read_recording(f))) for f in tmp_path.iterdir()}
    assert counts == {"MESH6_2027-03-13.rec": 1, "MESH6_2027-03-14.rec": 3, "MESH6_2027-03-15.rec": 1}
