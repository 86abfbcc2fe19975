"""Contract months: which one is the front month, when it expires, and resolving a symbol
(`trading.contract: MES`) to it at start over REST.

The equity-index futures here (MES, ES, MNQ, NQ) are quarterly (H M U Z) and stop trading
on the third Friday of the contract month at 8:30 am CT, i.e. 9:30 New York, when the
session opens: on its expiry day a contract is already gone for this bot. The documented
contract object carries no expiry, so it is computed from the id by that CME rule.
"""
from __future__ import annotations

import time as _time
from datetime import date, timedelta
from typing import Any, Callable


from common.instruments import INSTRUMENTS, MONTH_CODES, InstrumentError, parse_contract_id

QUARTERLY = "HMUZ"


class ContractError(ValueError):
    """A contract that cannot be traded (expired, unknown, not listed): one actionable line."""


def expiry_date(contract_id: str) -> date:
    """CON.F.US.MES.Z26 -> 2026-12-18 (third Friday of December 2026)."""
    _inst, month_code, year = parse_contract_id(contract_id)
    first = date(year, MONTH_CODES.index(month_code) + 1, 1)
    return first + timedelta(days=(4 - first.weekday()) % 7 + 14)


def contract_id(symbol: str, month_code: str, year: int) -> str:
    return f"CON.F.US.{INSTRUMENTS[symbol].root}.{month_code}{year % 100:02d}"


def quarterly_months(symbol: str, today: date, count: int = 2) -> list[str]:
    """The `count` contracts of `symbol` still tradeable on `today`, front month first."""
    out: list[str] = []
    year = today.year
    while len(out) < count:
        for code in QUARTERLY:
            cid = contract_id(symbol, code, year)
            if expiry_date(cid) > today and len(out) < count:
                out.append(cid)
        year += 1
    return out


def is_expired(contract_id: str, today: date) -> bool:
    return expiry_date(contract_id) <= today


def trading_days_until(expiry: date, today: date, is_trading_day: Callable[[date], bool] | None = None) -> int:
    """Trading days from `today` (excluded) up to `expiry` (included); weekdays by default."""
    is_trading_day = is_trading_day or (lambda d: d.weekday() < 5)
    n, d = 0, today
    while d < expiry:
        d += timedelta(days=1)
        n += is_trading_day(d)
    return n


def choose_front(symbol: str, listed: list[dict], today: date | None) -> str:
    """The front month among the broker's listed contracts: the earliest expiry of `symbol`
    that is active (and not expired on `today` when the date is known)."""
    inst = INSTRUMENTS[symbol]
    found = []
    for c in listed:
        try:
            parsed = parse_contract_id(str(c.get("id")))
        except InstrumentError:
            continue
        if parsed[0] is not inst or not c.get("activeContract", False):
            continue
        if today is not None and is_expired(c["id"], today):
            continue
        found.append(c["id"])
    if not found:
        raise ContractError(f"trading.contract = {symbol}: the broker lists no active {symbol} contract"
                            + (f" on {today}" if today else ""))
    return min(found, key=expiry_date)


def check_contract(cid: str, today: date | None, warn_days: int,
                   is_trading_day: Callable[[date], bool] | None = None) -> str | None:
    """Raises ContractError for an expired contract; returns a warning line when it expires
    within `warn_days` trading days, else None. `today` None (an event clock before its first
    event): nothing can be said from the date."""
    if today is None:
        return None
    exp = expiry_date(cid)
    if exp <= today:
        raise ContractError(f"trading.contract = {cid} expired on {exp} (today {today}); "
                            f"roll to the next month or set trading.contract to the symbol "
                            f"({parse_contract_id(cid)[0].symbol})")
    left = trading_days_until(exp, today, is_trading_day)
    if left <= warn_days:
        return (f"CONTRACT: {cid} expires {exp}, in {left} trading day(s): roll to the next month "
                f"(trading.expiry_warning_days = {warn_days})")
    return None


def resolve(spec: str, search: Callable[[str], list[dict]], by_id: Callable[[str], dict | None],
            today: date | None, warn_days: int,
            is_trading_day: Callable[[date], bool] | None = None) -> tuple[str, str | None]:
    """`spec` is a symbol (MES) or a contract id. Returns (contract id, warning or None).
    `search(symbol)` and `by_id(id)` are the broker's Contract/search and searchById."""
    if spec in INSTRUMENTS:
        cid = choose_front(spec, search(spec), today)
    else:
        cid = spec
        got = by_id(cid)
        if got is None:
            raise ContractError(f"trading.contract = {cid}: the broker does not know this contract")
        if got.get("activeContract") is False:
            raise ContractError(f"trading.contract = {cid} is not active at the broker (expired?); "
                                f"set trading.contract to the symbol ({parse_contract_id(cid)[0].symbol})")
    return cid, check_contract(cid, today, warn_days, is_trading_day)


def resolve_with_client(client: Any, spec: str, today: date | None, warn_days: int,
                        is_trading_day: Callable[[date], bool] | None = None,
                        sleep: Callable[[float], None] = _time.sleep,
                        give_up_s: float | None = None) -> tuple[str, str | None]:
    """`resolve` over a TopstepXClient. A broker not reachable yet (the simulator still starting,
    a loaded box) is waited for, one line per attempt (common/topstepx/startup.py); a refusal
    (ContractError, a 401 or refused login, another HTTP 4xx) ends it at once as a ContractError."""
    from common.topstepx.rest import BrokerError, OutcomeUnknown, RateLimited, TopstepXError
    from common.topstepx.startup import until_reachable

    def search(symbol: str) -> list[dict]:
        return client.call("/api/Contract/search", {"searchText": symbol, "live": False}).get("contracts") or []

    def by_id(cid: str) -> dict | None:
        try:
            return client.contract(cid)
        except BrokerError:
            return None

    try:
        return until_reachable(f"resolving {spec}", lambda: resolve(spec, search, by_id, today, warn_days,
                                                                    is_trading_day), sleep=sleep, prefix="CONTRACT",
                               give_up_s=give_up_s)
    except (OutcomeUnknown, RateLimited) as exc:
        raise ContractError(f"trading.contract = {spec}: the broker did not answer in {give_up_s:g} s ({exc})") from None
    except TopstepXError as exc:
        raise ContractError(f"trading.contract = {spec}: the broker refused ({exc})") from None
