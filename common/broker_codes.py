"""The broker's integer codes (topstepx_api.md §2), in one table shared by the order gateway, the
position keeper, the REST client and the simulator. Plain ints, so they go on the wire as-is;
the name tables are for log lines.

Which statuses count as what, decided once here:
- TERMINAL: never changes again (filled, cancelled, expired, rejected).
- WORKING: at the exchange and listed by Order/searchOpen (open, pending): counts as protection.
- LIVE: not finished: WORKING plus PendingCancel (a cancel was asked for, but the order can still
  fill) and Suspended (an Auto-OCO bracket child waiting for its entry's fill).
"""
from __future__ import annotations

# OrderStatus
NONE, OPEN, FILLED, CANCELLED, EXPIRED, REJECTED, PENDING, PENDING_CANCEL, SUSPENDED = range(9)
TERMINAL = frozenset({FILLED, CANCELLED, EXPIRED, REJECTED})
WORKING = frozenset({OPEN, PENDING})
LIVE = WORKING | {PENDING_CANCEL, SUSPENDED}
STATUS_NAMES = {NONE: "None", OPEN: "Open", FILLED: "Filled", CANCELLED: "Cancelled", EXPIRED: "Expired",
                REJECTED: "Rejected", PENDING: "Pending", PENDING_CANCEL: "PendingCancel", SUSPENDED: "Suspended"}

# OrderSide
BUY, SELL = 0, 1
SIDE_NAMES = {BUY: "BUY", SELL: "SELL"}

# OrderType
LIMIT, MARKET, STOP_LIMIT, STOP, TRAILING_STOP, JOIN_BID, JOIN_ASK = 1, 2, 3, 4, 5, 6, 7
TYPE_NAMES = {LIMIT: "LIMIT", MARKET: "MARKET", STOP_LIMIT: "STOP_LIMIT", STOP: "STOP",
              TRAILING_STOP: "TRAILING_STOP", JOIN_BID: "JOIN_BID", JOIN_ASK: "JOIN_ASK"}
STOP_TYPES = frozenset({STOP, STOP_LIMIT, TRAILING_STOP})     # what protects a position from a loss

# PositionType
POSITION_UNDEFINED, POSITION_LONG, POSITION_SHORT = 0, 1, 2


def status_name(code: int) -> str:
    return STATUS_NAMES.get(code, f"status{code}")


def position_direction(type_code: int) -> int:
    """PositionType -> +1 long, -1 short, 0 otherwise."""
    return {POSITION_LONG: 1, POSITION_SHORT: -1}.get(int(type_code or 0), 0)
