"""Signal generator: a prediction and the current position -> at most one signal kind.

Pure. The risk manager decides afterwards whether an entry may actually be sent.
"""
from __future__ import annotations

from dataclasses import dataclass

CODES = {
    "LONG_ENTRY": "LE", "SHORT_ENTRY": "SE", "EXIT_LONG": "XL", "EXIT_SHORT": "XS",
    "REVERSE_TO_LONG": "RL", "REVERSE_TO_SHORT": "RS", "FLATTEN": "FL",
}
ENTRIES = frozenset({"LONG_ENTRY", "SHORT_ENTRY"})
REVERSALS = frozenset({"REVERSE_TO_LONG", "REVERSE_TO_SHORT"})
EXITS = frozenset({"EXIT_LONG", "EXIT_SHORT"})


def signal_id(kind: str, bar_start_ns: int) -> str:
    """Deterministic id (the order gateway's idempotency key): LE1763997000."""
    return f"{CODES[kind]}{bar_start_ns // 10**9}"


@dataclass(frozen=True)
class SignalParams:
    min_confidence: float = 0.65
    reverse_confidence: float = 0.75
    max_holding_s: float = 900


def generate(direction: int, confidence: float, position: int, holding_s: float,
             p: SignalParams, trading_allowed: bool = True) -> tuple[str, str] | None:
    """(kind, reason) or None.

    position: +1 long, -1 short, 0 flat. holding_s: how long the position is held.
    trading_allowed False (outside the session's trading phases): nothing at all.
    """
    if not trading_allowed:
        return None
    if position != 0 and holding_s > p.max_holding_s:
        return ("EXIT_LONG" if position > 0 else "EXIT_SHORT"), f"max holding {p.max_holding_s:g} s"
    if confidence < p.min_confidence:
        return None
    if position == 0:
        if direction == 1:
            return "LONG_ENTRY", "model long"
        if direction == -1:
            return "SHORT_ENTRY", "model short"
        return None
    if direction == -position:
        if confidence > p.reverse_confidence:
            return ("REVERSE_TO_SHORT" if position > 0 else "REVERSE_TO_LONG"), "model reversed"
        return ("EXIT_LONG" if position > 0 else "EXIT_SHORT"), "model turned against"
    return None


def downgrade_reverse(kind: str) -> str:
    """A reversal whose entry leg is blocked becomes a plain exit."""
    return {"REVERSE_TO_SHORT": "EXIT_LONG", "REVERSE_TO_LONG": "EXIT_SHORT"}.get(kind, kind)
