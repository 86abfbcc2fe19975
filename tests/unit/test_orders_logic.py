"""Pure order-gateway logic: tags, bracket prices, log lines, guard rules, protection invariant."""
from __future__ import annotations

import pytest

from common.instruments import INSTRUMENTS
from services.orders import logic

C = "CON.F.US.MES.H26"


def test_tag_round_trip():
    assert logic.make_tag("LE1700000000", "stop", 0) == "LE1700000000:stop:0"
    assert logic.parse_tag("LE1700000000:stop:0") == ("LE1700000000", "stop", 0)
    assert logic.parse_tag("gw-eod-2026-11-23:eod:3") == ("gw-eod-2026-11-23", "eod", 3)
    assert logic.parse_tag("op-flatten-1:flatten:12") == ("op-flatten-1", "flatten", 12)
    for bad in (None, "", "x", "LE1:stop", "LE1:bogus:0", ":stop:0", "LE1:stop:x"):
        assert logic.parse_tag(bad) is None
    with pytest.raises(ValueError):
        logic.make_tag("k", "nope", 0)


def test_bracket_prices_long_and_short():
    assert logic.bracket_ticks(24201, 1, 8, 16) == (24193, 24217)
    assert logic.bracket_ticks(24201, -1, 8, 16) == (24209, 24185)
    assert logic.entry_side(1) == logic.BUY and logic.close_side(1) == logic.SELL
    assert logic.entry_side(-1) == logic.SELL and logic.close_side(-1) == logic.BUY


def test_log_lines_in_spec_format():
    t = INSTRUMENTS["MES"].to_ticks
    assert logic.order_line(C, logic.MARKET, logic.BUY, 1) == "ORDER: MARKET BUY 1 MES @ market"
    assert logic.order_line(C, logic.STOP, logic.SELL, 1, t("6048.00")) == "ORDER: STOP SELL 1 MES @ 6048.00"
    assert logic.order_line(C, logic.LIMIT, logic.SELL, 1, t("6054.00")) == "ORDER: LIMIT SELL 1 MES @ 6054.00"
    assert logic.fill_line(C, logic.BUY, 1, t("6050.50"), "entry") == "FILL: BOUGHT 1 MES @ 6050.50"
    assert logic.fill_line(C, logic.SELL, 1, t("6054.00"), "target") == "FILL: SOLD 1 MES @ 6054.00 (TARGET HIT)"
    assert logic.fill_line(C, logic.SELL, 1, t("6048.00"), "stop") == "FILL: SOLD 1 MES @ 6048.00 (STOP HIT)"


def test_margin_reduction():
    assert [logic.reduced_size(n) for n in (3, 2, 1, 0)] == [2, 1, 0, 0]


def refusal(**kw):
    base = dict(halted=False, halt_reason="", size=1, max_contracts=2, open_size=0, in_flight=False,
                past_flatten=False, entries_allowed=True, broker_ok=True)
    return logic.entry_refusal(**{**base, **kw})


def test_entry_refusals_in_order():
    assert refusal() is None
    assert refusal(halted=True, halt_reason="daily loss")[0] == "halted"
    assert refusal(halted=True, size=0)[0] == "halted"            # a halt wins over everything
    assert refusal(in_flight=True) == ("refused", "an entry is already in flight")
    assert refusal(open_size=1)[0] == "refused"
    assert refusal(size=3)[1] == "size 3 exceeds max_contracts 2"
    assert refusal(past_flatten=True)[1] == "past flatten time"
    assert refusal(entries_allowed=False)[0] == "refused"
    assert "hub" in refusal(broker_ok=False)[1]
    assert refusal(size=0)[0] == "refused"


def test_daily_loss_rule():
    mes = INSTRUMENTS["MES"]
    # long 2 @ 6050.25, mark 6045.25: 20 ticks x 2 x $1.25 = -$50
    u = logic.unrealized_cents(mes, 1, 2, mes.to_ticks("6050.25") * 4, mes.to_ticks("6045.25"))
    assert u == -5000
    assert logic.unrealized_cents(mes, -1, 1, mes.to_ticks("6050.25") * 4, mes.to_ticks("6045.25")) == 2500
    assert logic.unrealized_cents(mes, 0, 0, 0, 1) == 0
    assert logic.daily_loss_hit(-1000, -4000, 5000)
    assert not logic.daily_loss_hit(-1000, -3999, 5000)


def order(oid, type_, side, size, status=1, contract=C, tag=""):
    return logic.BrokerOrder(oid, contract, type_, side, size, status, tag)


def test_invariant_holds_for_a_good_bracket():
    pos = [logic.BrokerPosition(C, 1, 1, 0)]
    assert not logic.check_protection(pos, [order(1, logic.STOP, logic.SELL, 1), order(2, logic.LIMIT, logic.SELL, 1)])


def test_invariant_missing_stop_and_target():
    rep = logic.check_protection([logic.BrokerPosition(C, -1, 2, 0)], [])
    assert [p.size for p in rep.place_stop] == [2] and [p.size for p in rep.place_target] == [2]
    assert rep and len(rep.problems) == 2


def test_invariant_orphans_are_cancelled_when_flat():
    rep = logic.check_protection([], [order(1, logic.STOP, logic.SELL, 1), order(2, logic.LIMIT, logic.SELL, 1),
                                  order(3, logic.STOP, logic.SELL, 1, status=3), order(4, logic.MARKET, logic.BUY, 1)])
    assert sorted(rep.cancel) == [1, 2]           # a terminal order and a working market entry are left alone


def test_invariant_extra_wrong_side_and_size():
    pos = [logic.BrokerPosition(C, 1, 2, 0)]
    rep = logic.check_protection(pos, [order(1, logic.STOP, logic.SELL, 1), order(2, logic.STOP, logic.SELL, 2),
                                   order(3, logic.LIMIT, logic.SELL, 2), order(4, logic.LIMIT, logic.BUY, 1)])
    assert sorted(rep.cancel) == [2, 4]
    assert rep.resize == [(1, 2)]
    assert not rep.place_stop and not rep.place_target


def test_invariant_skips_busy_contracts():
    assert not logic.check_protection([logic.BrokerPosition(C, 1, 1, 0)], [], busy_contracts={C})
