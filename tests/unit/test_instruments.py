"""Tick math: exact integer ticks and cents for MES, ES, MNQ, NQ; no float ever decides a cent."""
from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.instruments import (
    INSTRUMENTS, InstrumentError, cents_to_str, contract_name, instrument_for, parse_contract_id, to_decimal,
)

MES, ES, MNQ, NQ = (INSTRUMENTS[s] for s in ("MES", "ES", "MNQ", "NQ"))


@pytest.mark.parametrize("inst, root, tick, tick_cents, point_cents, fee, rt_fee", [
    (MES, "MES", "0.25", 125, 500, 37, 74),
    (ES, "EP", "0.25", 1250, 5000, 140, 280),
    (MNQ, "MNQ", "0.25", 50, 200, 37, 74),
    (NQ, "ENQ", "0.25", 500, 2000, 140, 280),
])
def test_contract_table(inst, root, tick, tick_cents, point_cents, fee, rt_fee):
    assert inst.root == root and inst.symbol_id == f"F.US.{root}"
    assert inst.tick_size == Decimal(tick)
    assert inst.tick_value_cents == tick_cents
    assert inst.point_value_cents == point_cents
    assert inst.fee_per_side_cents == fee and inst.round_trip_fee_cents == rt_fee
    assert set(INSTRUMENTS) == {"MES", "ES", "MNQ", "NQ"}


def test_spec_example_14_ticks_mes_is_plus_17_50_gross():
    entry, exit_ = MES.to_ticks("6050.25"), MES.to_ticks("6053.75")
    assert exit_ - entry == 14
    gross = MES.ticks_to_cents(exit_ - entry)
    assert gross == 1750 and cents_to_str(gross) == "+$17.50"
    assert cents_to_str(gross - MES.round_trip_fee_cents) == "+$16.76"


@pytest.mark.parametrize("inst", [MES, ES, MNQ, NQ], ids=lambda i: i.symbol)
@pytest.mark.parametrize("price, ticks", [
    ("6050.25", 24201), ("6050", 24200), ("6050.50", 24202), ("6050.75", 24203), ("0", 0), ("0.25", 1),
    ("-1.25", -5), ("21345.75", 85383),
])
def test_to_ticks_exact_from_every_input_type(inst, price, ticks):
    assert inst.to_ticks(price) == ticks
    assert inst.to_ticks(Decimal(price)) == ticks
    assert inst.to_ticks(float(price)) == ticks
    assert inst.to_price(ticks) == Decimal(price)
    if Decimal(price) == int(Decimal(price)):
        assert inst.to_ticks(int(Decimal(price))) == ticks


@pytest.mark.parametrize("inst", [MES, ES, MNQ, NQ], ids=lambda i: i.symbol)
@pytest.mark.parametrize("price", ["6050.10", "6050.125", "6050.2501", "0.01", 6050.3, 0.1])
def test_to_ticks_refuses_off_grid_prices(inst, price):
    with pytest.raises(InstrumentError) as info:
        inst.to_ticks(price)
    assert str(info.value).startswith(f"{inst.symbol}: price ") and "not a multiple of tick size 0.25" in str(info.value)


@pytest.mark.parametrize("bad", ["abc", "", "nan", "inf", "-Infinity", float("nan"), float("inf")])
def test_not_a_price(bad):
    with pytest.raises(InstrumentError, match="not a (finite )?price"):
        MES.to_ticks(bad)


def test_float_noise_is_refused_exact_and_rounded_on_request():
    noisy = 24201 * 0.25 + 1e-9    # 6050.250000001: a price that went through float arithmetic
    assert noisy != 6050.25
    with pytest.raises(InstrumentError):
        MES.to_ticks(noisy)
    assert MES.to_ticks_rounded(noisy) == 24201
    assert MES.to_ticks_rounded(0.1 + 0.2) == 1     # 0.30000000000000004 -> 0.25


@pytest.mark.parametrize("price, ticks", [
    ("6050.125", 24200),     # exactly half a tick: half-even -> 24200 (even)
    ("6050.375", 24202),     # half a tick above 24201 -> 24202 (even)
    ("6050.37", 24201), ("6050.38", 24202), ("6050.12", 24200), ("6050.13", 24201),
    ("-0.125", 0), ("-0.13", -1),
])
def test_to_ticks_rounded_half_even(price, ticks):
    assert MES.to_ticks_rounded(price) == ticks
    assert ES.to_ticks_rounded(Decimal(price)) == ticks


def test_to_price_and_fmt():
    assert MES.to_price(24201) == Decimal("6050.25")
    assert MES.to_price(-3) == Decimal("-0.75")
    assert MES.fmt(24201) == "6050.25"
    assert MES.fmt(24200) == "6050.00"
    assert NQ.fmt(85383) == "21345.75"
    assert MES.fmt(0) == "0.00"
    assert MES.fmt(-5) == "-1.25"


@pytest.mark.parametrize("inst, ticks, size, cents", [
    (MES, 14, 1, 1750), (MES, -3, 1, -375), (MES, 4, 2, 1000),
    (ES, 14, 1, 17500), (ES, -1, 3, -3750),
    (MNQ, 14, 1, 700), (MNQ, -7, 2, -700),
    (NQ, 14, 1, 7000), (NQ, 1, 1, 500), (NQ, 0, 5, 0),
])
def test_ticks_to_cents(inst, ticks, size, cents):
    assert inst.ticks_to_cents(ticks, size) == cents
    assert isinstance(inst.ticks_to_cents(ticks, size), int)


@pytest.mark.parametrize("cents, text", [
    (1750, "+$17.50"), (-374, "-$3.74"), (0, "+$0.00"), (5, "+$0.05"), (-5, "-$0.05"), (-100, "-$1.00"),
    (123456789, "+$1234567.89"), (-1037, "-$10.37"),
])
def test_cents_to_str(cents, text):
    assert cents_to_str(cents) == text


@pytest.mark.parametrize("cid, symbol, month, year, name", [
    ("CON.F.US.MES.H26", "MES", "H", 2026, "MESH6"),
    ("CON.F.US.EP.M25", "ES", "M", 2025, "ESM5"),
    ("CON.F.US.MNQ.U27", "MNQ", "U", 2027, "MNQU7"),
    ("CON.F.US.ENQ.Z29", "NQ", "Z", 2029, "NQZ9"),
])
def test_parse_contract_id_and_name(cid, symbol, month, year, name):
    inst, got_month, got_year = parse_contract_id(cid)
    assert (inst.symbol, got_month, got_year) == (symbol, month, year)
    assert instrument_for(cid) is INSTRUMENTS[symbol]
    assert contract_name(cid) == name


@pytest.mark.parametrize("cid", ["", "MESH6", "CON.F.US.MES.H6", "CON.F.US.MES.A26", "con.f.us.mes.h26",
                                 "CON.F.US.MES.H26 ", "CON.F.US..H26", "CON.F.US.MES.H2026", "X.CON.F.US.MES.H26"])
def test_parse_contract_id_bad_form_names_the_id(cid):
    with pytest.raises(InstrumentError) as info:
        parse_contract_id(cid)
    assert f"contract id {cid!r} is not of the form" in str(info.value)


@pytest.mark.parametrize("cid, root", [("CON.F.US.ES.H26", "ES"), ("CON.F.US.NQ.H26", "NQ"), ("CON.F.US.CL.F27", "CL")])
def test_parse_contract_id_unknown_root_names_the_id(cid, root):
    # ES and NQ trade as EP and ENQ on TopstepX: their tickers are not contract-id roots
    with pytest.raises(InstrumentError) as info:
        contract_name(cid)
    assert str(info.value) == f"contract {cid!r}: unknown root {root!r}; known: ENQ, EP, MES, MNQ"


def test_none_contract_id():
    with pytest.raises(InstrumentError, match="contract id None"):
        parse_contract_id(None)


def test_to_decimal_keeps_the_shortest_float_repr():
    assert to_decimal(6050.25) == Decimal("6050.25")
    assert to_decimal(0.1) == Decimal("0.1")            # not 0.1000000000000000055511...
    d = Decimal("1.5")
    assert to_decimal(d) is d


@given(st.integers(-10**9, 10**9), st.sampled_from([MES, ES, MNQ, NQ]))
def test_ticks_price_round_trip_is_exact(ticks, inst):
    price = inst.to_price(ticks)
    assert inst.to_ticks(price) == ticks
    assert inst.to_ticks(inst.fmt(ticks)) == ticks
    assert inst.to_ticks(float(inst.fmt(ticks))) == ticks      # floats of grid prices are exact (k/4)
    assert inst.to_ticks_rounded(price) == ticks


@given(st.integers(-10**7, 10**7), st.integers(-10**5, 10**5))
def test_pnl_adds_up_in_cents(a, b):
    assert MES.ticks_to_cents(a) + MES.ticks_to_cents(b) == MES.ticks_to_cents(a + b)
    s = cents_to_str(MES.ticks_to_cents(a))
    assert Decimal(s.replace("$", "")) * 100 == MES.ticks_to_cents(a)
