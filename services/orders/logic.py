"""Pure order-gateway logic: tags, bracket prices, log lines, guard rules and the
protection invariant. No sockets, no broker I/O: unit-tested in tests/unit/test_orders_logic.py."""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from common.broker_codes import (  # noqa: F401  (the one table of broker codes)
    BUY, CANCELLED, FILLED, LIMIT, LIVE, MARKET, PENDING_CANCEL, REJECTED, SELL, STOP, STOP_TYPES, SUSPENDED,
    TERMINAL, WORKING,
)
from common.instruments import Instrument, contract_name, instrument_for
from services.orders.broker_view import PositionUpdate

LEGS = ("entry", "stop", "target", "exit", "flatten", "eod", "repair")

# broker Order/place error codes (topstepx_api.md §1.6)
INSUFFICIENT_FUNDS = 3

EXIT_REASON = {"target": "TARGET HIT", "stop": "STOP HIT", "exit": "EXIT", "flatten": "FLATTEN",
               "eod": "EOD FLATTEN", "repair": "STOP HIT"}


def make_tag(key: str, leg: str, attempt: int) -> str:
    if leg not in LEGS:
        raise ValueError(f"unknown leg {leg!r}")
    return f"{key}:{leg}:{attempt}"


def parse_tag(tag: str | None) -> tuple[str, str, int] | None:
    """'LE1700000000:stop:0' -> (key, leg, attempt); None for a tag that is not ours."""
    if not tag:
        return None
    key, sep, rest = tag.rpartition(":")
    if not sep:
        return None
    key2, sep2, leg = key.rpartition(":")
    if not sep2 or leg not in LEGS or not rest.isdigit() or not key2:
        return None
    return key2, leg, int(rest)


def entry_side(direction: int) -> int:
    return BUY if direction > 0 else SELL


def close_side(direction: int) -> int:
    return SELL if direction > 0 else BUY


def bracket_ticks(fill_ticks: int, direction: int, stop_dist: int, target_dist: int) -> tuple[int, int]:
    """(stop price, target price) in ticks for a position entered at fill_ticks."""
    if direction > 0:
        return fill_ticks - stop_dist, fill_ticks + target_dist
    return fill_ticks + stop_dist, fill_ticks - target_dist


def side_word(side: int) -> str:
    return "BUY" if side == BUY else "SELL"


def order_line(contract: str, type_: int, side: int, size: int, price_ticks: int | None = None) -> str:
    """The spec's ORDER line: `ORDER: MARKET BUY 1 MES @ market`, `ORDER: STOP SELL 1 MES @ 6048.00`."""
    inst = instrument_for(contract)
    kind = {MARKET: "MARKET", LIMIT: "LIMIT", STOP: "STOP"}.get(type_, f"TYPE{type_}")
    at = "market" if price_ticks is None else inst.fmt(price_ticks)
    return f"ORDER: {kind} {side_word(side)} {size} {inst.symbol} @ {at}"


def fill_line(contract: str, side: int, size: int, price_ticks: int, leg: str) -> str:
    """`FILL: BOUGHT 1 MES @ 6050.50`, `FILL: SOLD 1 MES @ 6054.00 (TARGET HIT)`."""
    inst = instrument_for(contract)
    word = "BOUGHT" if side == BUY else "SOLD"
    why = EXIT_REASON.get(leg)
    return f"FILL: {word} {size} {inst.symbol} @ {inst.fmt(price_ticks)}" + (f" ({why})" if why else "")


def bracket_mode_refusal(code: int, message: str) -> bool:
    """The documented refusal of a native bracket in the account's Position Brackets mode."""
    return code == 2 and "position brackets" in (message or "").lower()


def tag_in_use(code: int, message: str) -> bool:
    """The broker's refusal of a customTag it already has (topstepx_api.md: unique per account)."""
    m = (message or "").lower()
    return code == 2 and "tag" in m and ("in use" in m or "already" in m or "duplicate" in m)


def native_bracket_ticks(direction: int, stop_dist: int, target_dist: int) -> tuple[int, int]:
    """(stopLossBracket, takeProfitBracket) ticks, signed from the entry as TopstepX wants them:
    long: stop below (negative), target above; short: the other way round."""
    return (-stop_dist, target_dist) if direction > 0 else (stop_dist, -target_dist)


def bracket_child(tag: str) -> tuple[str, str] | None:
    """A native bracket child's tag (the entry's tag + -SL / -TP) -> (entry tag, leg)."""
    for sfx, leg in (("-SL", "stop"), ("-TP", "target")):
        if tag and tag.endswith(sfx):
            return tag[:-len(sfx)], leg
    return None


def reduced_size(size: int) -> int:
    """Insufficient margin: try one contract fewer (0 = give up)."""
    return max(0, size - 1)


# --------------------------------------------------------------------------
# last-line guard
# --------------------------------------------------------------------------

def entry_refusal(*, halted: bool, halt_reason: str, size: int, max_contracts: int, open_size: int,
                  in_flight: bool, past_flatten: bool, entries_allowed: bool, broker_ok: bool) -> tuple[str, str] | None:
    """(status, message) when an entry must not go out; None when it may."""
    if halted:
        return "halted", f"gateway halted: {halt_reason}"
    if size <= 0:
        return "refused", f"size {size} is not positive"
    if in_flight:
        return "refused", "an entry is already in flight"
    if open_size:
        return "refused", f"exposure already open ({open_size} contracts)"
    if size + open_size > max_contracts:
        return "refused", f"size {size} exceeds max_contracts {max_contracts}"
    if past_flatten:
        return "refused", "past flatten time"
    if not entries_allowed:
        return "refused", "outside the entry window"
    if not broker_ok:
        return "refused", "user hub down and no REST reconciliation since"
    return None


def unrealized_cents(inst: Instrument, direction: int, size: int, avg_ticks_x4: int, mark_ticks: int) -> int:
    """Open P&L in cents; avg price given in quarter ticks to keep averages exact enough."""
    if not size or not direction:
        return 0
    diff_x4 = (mark_ticks * 4 - avg_ticks_x4) * direction
    return diff_x4 * size * inst.tick_value_cents // 4


def daily_loss_hit(realized_net_cents: int, unrealized: int, max_daily_loss_cents: int) -> bool:
    return realized_net_cents + unrealized <= -max_daily_loss_cents


# --------------------------------------------------------------------------
# protection invariant
# --------------------------------------------------------------------------

@dataclass
class BrokerOrder:
    id: int
    contract: str
    type: int
    side: int
    size: int
    status: int
    tag: str = ""
    limit_ticks: int | None = None
    stop_ticks: int | None = None


@dataclass
class BrokerPosition:
    contract: str
    direction: int
    size: int
    avg_ticks_x4: int = 0


def position_of(raw: dict) -> BrokerPosition | None:
    """A broker position (REST or hub, TopstepX JSON) -> BrokerPosition; None when flat."""
    u = PositionUpdate.of(raw)                  # the one conversion of the broker's record
    if not u.size:
        return None
    inst = instrument_for(u.contract)
    avg_x4 = int((u.average_price / inst.tick_size * 4).to_integral_value())
    return BrokerPosition(u.contract, u.direction, u.size, avg_x4)


@dataclass
class Repair:
    """What to do to restore the invariant."""
    cancel: list[int] = field(default_factory=list)                  # stray order ids
    resize: list[tuple[int, int]] = field(default_factory=list)      # (order id, new size)
    place_stop: list[BrokerPosition] = field(default_factory=list)
    place_target: list[BrokerPosition] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.cancel or self.resize or self.place_stop or self.place_target)


def check_protection(positions: list[BrokerPosition], orders: list[BrokerOrder],
                     busy_contracts: set[str] = frozenset()) -> Repair:
    """Every open position has exactly one stop and one target of matching size on the closing
    side; no stop/limit order works without a position. Contracts in `busy_contracts` (an entry,
    exit or flatten in progress) are left alone."""
    rep = Repair()
    by_contract = {p.contract: p for p in positions if p.size > 0 and p.direction}
    working = [o for o in orders if o.status in WORKING]
    contracts = set(by_contract) | {o.contract for o in working}
    for c in sorted(contracts):
        if c in busy_contracts:
            continue
        pos = by_contract.get(c)
        mine = [o for o in working if o.contract == c and o.type in (STOP, LIMIT)]
        if pos is None:
            for o in mine:
                rep.cancel.append(o.id)
                rep.problems.append(f"order {o.id} ({o.tag or 'no tag'}) works with no position in {contract_name(c)}")
            continue
        side = close_side(pos.direction)
        stops = [o for o in mine if o.type == STOP and o.side == side]
        targets = [o for o in mine if o.type == LIMIT and o.side == side]
        wrong = [o for o in mine if o.side != side]
        for o in wrong:
            rep.cancel.append(o.id)
            rep.problems.append(f"order {o.id} ({o.tag}) is on the wrong side of the position")
        for group, name, missing in ((stops, "stop", rep.place_stop), (targets, "target", rep.place_target)):
            if not group:
                missing.append(pos)
                rep.problems.append(f"{contract_name(c)} {pos.size} open with no {name}")
                continue
            for extra in group[1:]:
                rep.cancel.append(extra.id)
                rep.problems.append(f"extra {name} order {extra.id} ({extra.tag})")
            if group[0].size != pos.size:
                rep.resize.append((group[0].id, pos.size))
                rep.problems.append(f"{name} order {group[0].id} size {group[0].size} != position {pos.size}")
    return rep
