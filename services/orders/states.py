"""The order gateway's two state machines, with their transition tables spelled out.

An Intent is one entry command's trade: placed, working, open (filled and protected), closing,
and how it ended. A broker order's status follows the broker's codes (common/broker_codes.py),
with two rules of our own: a finished order never comes back to life on a late event, and a
cancel we sent makes the order PendingCancel until the broker says how it ended, which may be a
fill (a fill after the cancel was sent is still a fill, and counts).
Pure: no I/O; tested in tests/unit/test_orders_states.py.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import Enum
from typing import Any

from common import broker_codes


class IntentState(str, Enum):
    PLACING = "placing"        # journaled, entry order on its way
    UNKNOWN = "unknown"        # the placement's outcome is not known: resolve by tag, else close
    WORKING = "working"        # the broker has the entry order, no fill yet
    OPEN = "open"              # (part) filled: protection placed or being placed
    CLOSING = "closing"        # an exit or flatten is closing it; protection stays until flat
    CLOSED = "closed"          # flat again
    REJECTED = "rejected"      # the broker refused the entry
    CANCELLED = "cancelled"    # the entry ended with no fill
    FAILED = "failed"          # never placed (or unconfirmed and closed)


S = IntentState
ACTIVE = frozenset({S.PLACING, S.UNKNOWN, S.WORKING, S.OPEN, S.CLOSING})
IN_FLIGHT = frozenset({S.PLACING, S.UNKNOWN, S.WORKING})      # an entry whose size is not settled yet

TRANSITIONS: dict[IntentState, frozenset[IntentState]] = {
    S.PLACING: frozenset({S.WORKING, S.UNKNOWN, S.OPEN, S.REJECTED, S.FAILED, S.CLOSED}),
    S.UNKNOWN: frozenset({S.WORKING, S.OPEN, S.REJECTED, S.CANCELLED, S.FAILED, S.CLOSED}),
    S.WORKING: frozenset({S.OPEN, S.CANCELLED, S.REJECTED, S.CLOSING, S.CLOSED}),
    S.OPEN: frozenset({S.OPEN, S.CLOSING, S.CLOSED}),
    S.CLOSING: frozenset({S.OPEN, S.CLOSING, S.CLOSED}),     # back to OPEN when a close fails
    S.CLOSED: frozenset(),
    S.REJECTED: frozenset(),
    S.CANCELLED: frozenset(),
    S.FAILED: frozenset(),
}


class IllegalTransition(ValueError):
    pass


def check(cur: IntentState, new: IntentState) -> None:
    if new not in TRANSITIONS[cur]:
        raise IllegalTransition(f"intent {cur.value} -> {new.value} is not allowed")


@dataclass
class Intent:
    """One entry (or the entry leg of a reverse) and its protection. Journaled as a dict."""
    key: str
    contract: str
    direction: int
    size: int
    stop_ticks: int
    target_ticks: int
    signal_id: str = ""
    model_version: str = ""
    state: IntentState = S.PLACING
    entry_oid: int | None = None
    filled: int = 0
    closed: int = 0
    fill_ticks: int | None = None
    stop_oid: int | None = None
    target_oid: int | None = None
    since: float = 0.0                 # monotonic time of the last state change that has a deadline
    protect_t0: int | None = None      # perf_counter_ns of the first fill (benchmark)
    native: bool = False               # stop and target are the broker's Auto-OCO bracket children

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    @property
    def in_flight(self) -> bool:
        return self.state in IN_FLIGHT

    def to(self, new: IntentState) -> "Intent":
        check(self.state, new)
        self.state = new
        return self

    def as_dict(self) -> dict[str, Any]:
        d = {name: getattr(self, name) for name in _INTENT_FIELDS}     # all plain: no deep copy (asdict: 81 us)
        d["state"] = self.state.value
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Intent":
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        kw["state"] = IntentState(kw.get("state", "placing"))
        return cls(**kw)


_INTENT_FIELDS = tuple(f.name for f in dataclasses.fields(Intent))


# --------------------------------------------------------------------------
# broker order status
# --------------------------------------------------------------------------

def next_status(cur: int | None, reported: int) -> int:
    """The status to hold after the broker reports `reported` for an order we hold at `cur`.
    A fill is a fact and always wins; any other finished status is final (a late Open event
    does not revive it); after our cancel the order stays PendingCancel until it ends."""
    if cur is None:
        return reported
    if reported == broker_codes.FILLED:
        return reported
    if cur in broker_codes.TERMINAL:
        return cur
    if cur == broker_codes.PENDING_CANCEL and reported in broker_codes.WORKING:
        return cur
    return reported


def after_cancel_sent(cur: int) -> int:
    """We asked the broker to cancel: the order may still fill until the broker says it ended."""
    return broker_codes.PENDING_CANCEL if cur in broker_codes.LIVE else cur
