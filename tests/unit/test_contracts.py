"""Contract months and resolving `trading.contract` (common/contracts.py): pure, with the
broker's answers given as plain lists. Every date is stated; nothing reads today's date."""
from __future__ import annotations

from datetime import date

import pytest

from common.contracts import (
    ContractError, check_contract, choose_front, expiry_date, quarterly_months, resolve, trading_days_until,
)


def listed(*ids: str, active: bool = True) -> list[dict]:
    return [{"id": i, "activeContract": active} for i in ids]


def test_expiry_is_the_third_friday():
    assert expiry_date("CON.F.US.MES.H26") == date(2026, 3, 20)
    assert expiry_date("CON.F.US.MES.Z26") == date(2026, 12, 18)
    assert expiry_date("CON.F.US.EP.M18") == date(2018, 6, 15)


def test_front_and_next_month_roll_on_expiry_day():
    assert quarterly_months("MES", date(2026, 11, 23)) == ["CON.F.US.MES.Z26", "CON.F.US.MES.H27"]
    assert quarterly_months("MES", date(2026, 12, 17)) == ["CON.F.US.MES.Z26", "CON.F.US.MES.H27"]
    # on expiry day the month stops at 9:30 New York, when the session opens: gone for the bot
    assert quarterly_months("MES", date(2026, 12, 18)) == ["CON.F.US.MES.H27", "CON.F.US.MES.M27"]
    assert quarterly_months("ES", date(2018, 5, 7))[0] == "CON.F.US.EP.M18"


def test_trading_days_skip_weekends_and_given_holidays():
    assert trading_days_until(date(2026, 12, 18), date(2026, 12, 11)) == 5       # Fri -> Fri
    assert trading_days_until(date(2026, 12, 18), date(2026, 12, 11), lambda d: d.weekday() < 5
                              and d != date(2026, 12, 15)) == 4


def test_choose_front_takes_the_earliest_active_unexpired_month_of_the_symbol():
    broker = listed("CON.F.US.MES.H27", "CON.F.US.MES.Z26", "CON.F.US.MNQ.Z26", "garbage") + \
        listed("CON.F.US.MES.U26", active=False)
    assert choose_front("MES", broker, date(2026, 11, 23)) == "CON.F.US.MES.Z26"
    assert choose_front("MES", broker, None) == "CON.F.US.MES.Z26"
    # listed as active but expired by the date: skipped (a stale list must not trade a dead month)
    assert choose_front("MES", listed("CON.F.US.MES.U26", "CON.F.US.MES.Z26"), date(2026, 10, 1)) == \
        "CON.F.US.MES.Z26"
    with pytest.raises(ContractError, match="no active NQ contract"):
        choose_front("NQ", broker, date(2026, 11, 23))


def test_expired_contract_is_refused_and_a_near_expiry_warned():
    with pytest.raises(ContractError) as info:
        check_contract("CON.F.US.MES.H26", date(2026, 11, 23), 5)
    assert "expired on 2026-03-20" in str(info.value) and "MES" in str(info.value)
    assert check_contract("CON.F.US.MES.Z26", date(2026, 11, 23), 5) is None           # 19 trading days
    w = check_contract("CON.F.US.MES.Z26", date(2026, 12, 14), 5)                      # Mon -> Fri: 4
    assert w and "in 4 trading day(s)" in w and "trading.expiry_warning_days = 5" in w
    assert check_contract("CON.F.US.MES.H26", None, 5) is None                         # no date: nothing said


def test_resolve_symbol_and_id():
    asked = []

    def search(sym):
        asked.append(sym)
        return listed("CON.F.US.MES.Z26", "CON.F.US.MES.H27")

    def by_id(cid):
        return {"id": cid, "activeContract": cid != "CON.F.US.MES.H26"} if "MES" in cid else None

    assert resolve("MES", search, by_id, date(2026, 11, 23), 5) == ("CON.F.US.MES.Z26", None)
    assert asked == ["MES"]
    cid, warning = resolve("MES", search, by_id, date(2026, 12, 16), 5)
    assert cid == "CON.F.US.MES.Z26" and "expires 2026-12-18" in warning
    assert resolve("CON.F.US.MES.H27", search, by_id, date(2026, 11, 23), 5)[0] == "CON.F.US.MES.H27"
    with pytest.raises(ContractError, match="not active at the broker"):
        resolve("CON.F.US.MES.H26", search, by_id, None, 5)
    with pytest.raises(ContractError, match="does not know"):
        resolve("CON.F.US.ENQ.Z26", search, by_id, None, 5)
