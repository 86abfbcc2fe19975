"""The broker adapter's one conversion: TopstepX JSON (REST answers and user-hub events, the
same shapes) -> typed records with the broker's integer codes checked against
common/broker_codes.py, prices as Decimal. Everything after this works on these records."""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from common import broker_codes
from common.topstepx.rest import parse_time


class BadBrokerRecord(ValueError):
    """A broker record the gateway cannot read (missing id, unknown code)."""


def _dec(v: Any) -> Decimal | None:
    return None if v in (None, "") else Decimal(str(v))


def created_ns(raw: dict) -> int:
    """A record's creationTimestamp in ns; 0 when missing or unreadable (the reconciliation then
    searches the whole session: a bad stamp costs a full search, never a missed order)."""
    try:
        return parse_time(raw.get("creationTimestamp"))
    except (TypeError, ValueError):
        return 0


def _code(raw: dict, name: str, allowed: dict[int, str], default: int | None = None) -> int:
    v = raw.get(name, default)
    try:
        v = int(v)
    except (TypeError, ValueError):
        raise BadBrokerRecord(f"{name}={raw.get(name)!r} is not a broker code") from None
    if v not in allowed:
        raise BadBrokerRecord(f"{name}={v} is not a known broker code")
    return v


@dataclass(frozen=True)
class OrderUpdate:
    id: int
    contract: str
    status: int | None      # None: the record did not say (keep what is known)
    type: int
    side: int
    size: int
    fill_volume: int
    tag: str
    limit_price: Decimal | None
    stop_price: Decimal | None
    filled_price: Decimal | None

    @classmethod
    def of(cls, raw: dict) -> "OrderUpdate":
        if raw.get("id") is None:
            raise BadBrokerRecord("order without an id")
        return cls(int(raw["id"]), raw.get("contractId") or "",
                   None if raw.get("status") is None else _code(raw, "status", broker_codes.STATUS_NAMES),
                   _code(raw, "type", {0: "none", **broker_codes.TYPE_NAMES}, 0),
                   _code(raw, "side", broker_codes.SIDE_NAMES, broker_codes.BUY), int(raw.get("size") or 0), int(raw.get("fillVolume") or 0),
                   raw.get("customTag") or "", _dec(raw.get("limitPrice")), _dec(raw.get("stopPrice")),
                   None if raw.get("filledPrice") in (None, 0) else _dec(raw.get("filledPrice")))

    @property
    def finished_unfilled(self) -> bool:
        return self.status is not None and self.status in broker_codes.TERMINAL and self.fill_volume == 0


@dataclass(frozen=True)
class TradeUpdate:
    id: int
    order_id: int
    contract: str
    side: int
    size: int
    price: Decimal
    fees: Decimal
    pnl: Decimal | None
    voided: bool
    timestamp: str

    @classmethod
    def of(cls, raw: dict) -> "TradeUpdate":
        if raw.get("id") is None or raw.get("price") is None:
            raise BadBrokerRecord("trade without an id or a price")
        return cls(int(raw["id"]), int(raw.get("orderId") or 0), raw.get("contractId") or "",
                   _code(raw, "side", broker_codes.SIDE_NAMES, broker_codes.BUY), int(raw.get("size") or 0), Decimal(str(raw["price"])),
                   (_dec(raw.get("fees")) or Decimal(0)) + (_dec(raw.get("commissions")) or Decimal(0)),
                   _dec(raw.get("profitAndLoss")), bool(raw.get("voided")), raw.get("creationTimestamp") or "")


@dataclass(frozen=True)
class PositionUpdate:
    contract: str
    direction: int          # +1 long, -1 short, 0 flat
    size: int
    average_price: Decimal

    @classmethod
    def of(cls, raw: dict) -> "PositionUpdate":
        size = int(raw.get("size") or 0)
        d = broker_codes.position_direction(raw.get("type") or 0)
        return cls(raw.get("contractId") or "", d if size else 0, size if d else 0,
                   _dec(raw.get("averagePrice")) or Decimal(0))
