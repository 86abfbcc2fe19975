"""Position keeper ledger: P&L and fee arithmetic exact to the cent (MES: $1.25 a tick, $0.37 a side)."""
from __future__ import annotations

from datetime import datetime

import pytest

from common.clock import NY, from_dt, to_ny
from common.instruments import cents_to_str
from common.messages import Fill, OrderEvent
from services.positions.ledger import Ledger, exit_reason, leg_from_tag, price_str

MES = "CON.F.US.MES.H26"
BUY, SELL = 0, 1
T0 = from_dt(datetime(2026, 11, 23, 10, 0, tzinfo=NY))
S = 1_000_000_000


def day_of(ns: int) -> str:
    return to_ny(ns).date().isoformat()


def ledger(balance: int = 100_000) -> Ledger:
    return Ledger(balance, day_of)


_ids = iter(range(1, 10_000))


def fill(side: int, size: int, price: str, t: int = 0, leg: str = "entry", fees: int | None = None,
         trade_id: int | None = None, signal_id: str = "", model_version: str = "") -> Fill:
    ticks = int(float(price) * 4)
    return Fill(trade_id or next(_ids), 1, MES, leg, side, size, ticks,
                37 * size if fees is None else fees, None, T0 + t * S,
                signal_id=signal_id, model_version=model_version)


# (name, fills as (side, size, price, leg), expected [(direction, size, entry, exit, ticks, pnl, fees, reason)])
CASES = [
    ("long win", [(BUY, 1, "6050.00", "entry"), (SELL, 1, "6053.50", "target")],
     [(1, 1, "6050.00", "6053.50", 14, 1676, 74, "target")]),
    ("long loss", [(BUY, 1, "6050.00", "entry"), (SELL, 1, "6048.00", "stop")],
     [(1, 1, "6050.00", "6048.00", -8, -1074, 74, "stop")]),
    ("short win", [(SELL, 1, "6050.00", "entry"), (BUY, 1, "6047.25", "target")],
     [(-1, 1, "6050.00", "6047.25", 11, 1301, 74, "target")]),
    ("short loss", [(SELL, 1, "6053.50", "entry"), (BUY, 1, "6055.00", "exit")],
     [(-1, 1, "6053.50", "6055.00", -6, -824, 74, "signal")]),
    ("scratch costs the fees", [(BUY, 1, "6050.25", "entry"), (SELL, 1, "6050.25", "flatten")],
     [(1, 1, "6050.25", "6050.25", 0, -74, 74, "flatten")]),
    ("two contracts, partial exits", [(BUY, 2, "6050.00", "entry"), (SELL, 1, "6051.00", "target"),
                                      (SELL, 1, "6052.00", "eod")],
     [(1, 2, "6050.00", "6051.50", 6, 1500 - 148, 148, "eod")]),
    ("partial entry fills then one exit", [(BUY, 1, "6050.00", "entry"), (BUY, 1, "6050.25", "entry"),
                                           (SELL, 2, "6052.50", "target")],
     [(1, 2, "6050.125", "6052.50", 10, 2375 - 148, 148, "target")]),
    ("scale-in short", [(SELL, 1, "6050.00", "entry"), (SELL, 2, "6051.00", "entry"),
                        (BUY, 3, "6049.00", "exit")],
     [(-1, 3, "6050.666667", "6049.00", 7, (4 + 2 * 8) * 125 - 6 * 37, 222, "signal")]),
    ("reversal through zero", [(BUY, 1, "6050.00", "entry"), (SELL, 2, "6049.00", "exit"),
                               (BUY, 1, "6047.50", "target")],
     [(1, 1, "6050.00", "6049.00", -4, -574, 74, "signal"),
      (-1, 1, "6049.00", "6047.50", 6, 676, 74, "target")]),
]


@pytest.mark.parametrize("name,fills,expected", CASES, ids=[c[0] for c in CASES])
def test_round_trip_arithmetic(name, fills, expected):
    lg = ledger()
    trips = []
    for i, (side, size, price, leg) in enumerate(fills):
        trips += lg.apply_fill(fill(side, size, price, t=i * 10, leg=leg))
    got = [(t.direction, t.size, t.entry_price, t.exit_price, t.ticks, t.pnl_cents, t.fees_cents, t.exit_reason)
           for t in trips]
    assert got == expected
    assert not lg.open
    assert lg.realized_day_cents == sum(e[5] for e in expected)
    assert lg.fees_day_cents == sum(e[6] for e in expected)
    assert lg.balance_cents == 100_000 + lg.realized_day_cents
    assert lg.trades_today == len(expected)


def test_trade_closed_text_matches_spec():
    assert cents_to_str(1750) == "+$17.50"
    assert cents_to_str(-374) == "-$3.74"


def test_open_position_view_and_unrealized():
    lg = ledger()
    lg.apply_fill(fill(BUY, 1, "6050.00", signal_id="LE1763910000", model_version="v1"))
    lg.apply_fill(fill(BUY, 1, "6050.25", t=5))
    pos = lg.position(MES)
    assert (pos.direction, pos.size, pos.avg_price, pos.entry_ns) == (1, 2, "6050.125", T0)
    assert pos.signal_id == "LE1763910000" and pos.model_version == "v1"
    assert pos.unrealized_cents == 0 and pos.mark_ticks is None      # no quote yet
    lg.apply_quote(MES, bid=int(6049.50 * 4), ask=int(6049.75 * 4), last=int(6049.75 * 4))
    pos = lg.position(MES)
    # long marks at the bid: (6049.50-6050.00)*4 ticks*125 + (6049.50-6050.25)*4*125 = -250 - 375
    assert pos.mark_ticks == int(6049.50 * 4) and pos.unrealized_cents == -625
    acct = lg.account()
    assert acct.unrealized_cents == -625 and acct.realized_day_cents == -74 and acct.fees_day_cents == 74
    # a short marks at the ask
    lg2 = ledger()
    lg2.apply_fill(fill(SELL, 1, "6050.00"))
    lg2.apply_quote(MES, bid=int(6049.50 * 4), ask=int(6049.75 * 4), last=None)
    assert lg2.unrealized_cents(MES) == 125


def test_partial_exit_keeps_average_and_realizes_fifo():
    lg = ledger()
    lg.apply_fill(fill(BUY, 1, "6050.00"))
    lg.apply_fill(fill(BUY, 1, "6051.00"))
    assert lg.apply_fill(fill(SELL, 1, "6052.00", leg="target")) == []
    pos = lg.position(MES)
    assert pos.size == 1 and pos.avg_price == "6050.50"      # broker convention: average cost
    assert lg.realized_day_cents == 8 * 125 - 3 * 37           # first lot closed (+8 ticks), 3 sides paid
    lg.apply_quote(MES, bid=int(6052.00 * 4), ask=int(6052.25 * 4), last=None)
    assert lg.unrealized_cents(MES) == 4 * 125                  # remaining lot from 6051.00
    [rt] = lg.apply_fill(fill(SELL, 1, "6052.00", leg="stop"))
    assert rt.pnl_cents == (8 + 4) * 125 - 4 * 37 and rt.exit_reason == "stop"


def test_duplicate_trade_id_is_ignored():
    lg = ledger()
    lg.apply_fill(fill(BUY, 1, "6050.00", trade_id=77))
    assert lg.apply_fill(fill(BUY, 1, "6050.00", trade_id=77)) == []
    assert lg.position(MES).size == 1 and lg.duplicates == 1 and lg.fees_day_cents == 37


def test_fees_from_the_table_when_the_fill_has_none():
    lg = ledger()
    lg.apply_fill(fill(BUY, 2, "6050.00", fees=0))
    [rt] = lg.apply_fill(fill(SELL, 2, "6050.00", fees=0))
    assert rt.fees_cents == 4 * 37 and rt.pnl_cents == -148


def test_consecutive_losses_and_day_roll():
    lg = ledger(100_000)
    for i in range(3):
        lg.apply_fill(fill(BUY, 1, "6050.00", t=i * 20))
        lg.apply_fill(fill(SELL, 1, "6049.00", t=i * 20 + 10, leg="stop"))
    assert lg.consecutive_losses == 3 and lg.trades_today == 3
    lg.apply_fill(fill(BUY, 1, "6050.00", t=100))
    lg.apply_fill(fill(SELL, 1, "6060.00", t=110, leg="target"))
    assert lg.consecutive_losses == 0 and lg.trades_today == 4
    day1 = lg.day
    balance = lg.balance_cents
    assert balance == 100_000 + 3 * (-500 - 74) + (40 * 125 - 74)
    assert lg.high_water_cents == 100_000          # only end-of-day balances count
    lg.advance(T0 + 86_400 * S)
    assert lg.day > day1
    acct = lg.account()
    assert (acct.realized_day_cents, acct.trades_today, acct.consecutive_losses, acct.fees_day_cents) == (0, 0, 0, 0)
    assert acct.high_water_cents == balance and acct.balance_cents == balance
    assert lg.trips == []


def test_stop_and_target_from_order_events():
    lg = ledger()
    lg.apply_fill(fill(BUY, 1, "6050.00"))
    lg.apply_order_event(OrderEvent(11, "LE1:stop:0", MES, "stop", 1, 4, 1, 1, stop_ticks=24192))
    lg.apply_order_event(OrderEvent(12, "LE1:target:0", MES, "target", 1, 1, 1, 1, limit_ticks=24212))
    pos = lg.position(MES)
    assert (pos.stop_ticks, pos.stop_order_id, pos.target_ticks, pos.target_order_id) == (24192, 11, 24212, 12)
    lg.apply_order_event(OrderEvent(12, "LE1:target:0", MES, "target", 1, 1, 1, 3, limit_ticks=24212))
    pos = lg.position(MES)
    assert pos.target_order_id is None and pos.stop_order_id == 11
    lg.apply_fill(fill(SELL, 1, "6048.00", leg="stop"))
    assert lg.position(MES).direction == 0 and lg.position(MES).stop_order_id is None


def test_adopt_broker_position():
    lg = ledger()
    from decimal import Decimal
    lg.adopt(MES, -2, Decimal("6050.125"), T0)
    pos = lg.position(MES)
    assert (pos.direction, pos.size, pos.avg_price) == (-1, 2, "6050.125")
    [rt] = lg.apply_fill(fill(BUY, 2, "6049.125".replace("125", "00"), leg="flatten"))
    # 6050.125 -> 6049.00: 4.5 ticks x 2 contracts x $1.25 = $11.25 gross, 2 sides of fees on the close
    assert rt.pnl_cents == 1125 - 74 and rt.ticks == 4 and rt.exit_reason == "flatten"
    lg.adopt(MES, 0, None, T0)
    assert lg.position(MES).size == 0


def test_tags_and_reasons():
    assert leg_from_tag("LE1763910000:target:0") == "target"
    assert leg_from_tag("op-flatten-123:flatten:1") == "flatten"
    assert leg_from_tag("garbage") == ""
    assert [exit_reason(x) for x in ("target", "stop", "exit", "flatten", "eod", "")] == \
        ["target", "stop", "signal", "flatten", "eod", "broker"]
    assert price_str(24201, MES) == "6050.25"


def test_state_round_trip():
    lg = ledger()
    lg.apply_fill(fill(BUY, 1, "6050.00", trade_id=9001))
    lg.apply_fill(fill(SELL, 1, "6051.00", trade_id=9002, leg="target"))
    lg.apply_fill(fill(SELL, 1, "6051.00", trade_id=9003))
    lg.apply_fill(fill(SELL, 2, "6052.00", trade_id=9004))
    import json
    blob = json.loads(json.dumps(lg.to_json()))
    lg2 = ledger()
    lg2.load_json(blob)
    assert lg2.account() == lg.account()
    assert lg2.position(MES) == lg.position(MES)
    assert lg2.trips == lg.trips
    assert lg2.apply_fill(fill(SELL, 1, "6051.00", trade_id=9004)) == []   # de-dup survives
    [rt] = lg2.apply_fill(fill(BUY, 3, "6050.00", leg="target"))
    assert rt.pnl_cents == (4 + 2 * 8) * 125 - 6 * 37
