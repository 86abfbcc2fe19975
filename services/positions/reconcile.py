"""Reconciliation with the broker: the pure decision, and broker rows turned into messages.

The broker is the truth. A check compares the keeper's positions (contract -> signed
size) with Position/searchOpen:
- "missing": the broker holds a position the keeper does not know;
- "extra":   the keeper holds a position the broker does not have;
- "size":    both hold one, with a different size or direction.

A forced check (start, publisher restart or sequence gap) acts at once. A periodic
check acts only when the same disagreement is seen twice in a row, so a fill that is
still on its way through the bus is not mistaken for a mismatch; trades missing from
the keeper are likewise ingested from Trade/search when a forced check sees them or
two periodic checks in a row do.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from common.instruments import InstrumentError, instrument_for, to_decimal
from common.messages import Fill
from common.topstepx.rest import parse_time
from services.positions.ledger import leg_from_tag

SIGNAL_CODES = ("LE", "SE", "XL", "XS", "RL", "RS", "FL")


@dataclass(frozen=True)
class Mismatch:
    contract: str
    kind: str        # missing, extra, size
    ours: int        # signed size the keeper held
    broker: int      # signed size the broker holds

    def text(self) -> str:
        what = {"missing": "broker holds a position the keeper did not know",
                "extra": "keeper held a position the broker does not have",
                "size": "size differs"}[self.kind]
        return f"{self.contract}: {what} (keeper {self.ours:+d}, broker {self.broker:+d})"


def compare(ours: dict[str, int], broker: dict[str, int]) -> list[Mismatch]:
    out = []
    for c in sorted(set(ours) | set(broker)):
        a, b = ours.get(c, 0), broker.get(c, 0)
        if a == b:
            continue
        kind = "missing" if a == 0 else "extra" if b == 0 else "size"
        out.append(Mismatch(c, kind, a, b))
    return out


@dataclass
class Decision:
    mismatches: list[Mismatch]
    act: bool                        # alert + repair now
    ingest: set[int]                 # trade ids to apply from Trade/search
    resolved: bool = False           # an active alert is over: publish active=False


@dataclass
class Reconciler:
    active: bool = False                              # a position_mismatch RiskEvent is active
    suspect: tuple = ()                               # mismatches seen once by a periodic check
    unseen_before: set[int] = field(default_factory=set)
    checks: int = 0
    mismatches: int = 0

    def decide(self, ours: dict[str, int], broker: dict[str, int], unseen: set[int], forced: bool,
               moves: dict[int, tuple[str, int]] | None = None) -> Decision:
        """`moves` gives the contract and signed size of each unseen trade: the trades this check
        ingests count in the keeper's position before it is compared, so a fill the broker already
        lists (the gateway's shutdown flatten, read in the keeper's last check) is no mismatch."""
        self.checks += 1
        ingest = set(unseen) if forced else unseen & self.unseen_before
        expected = dict(ours)
        for tid in ingest:
            if moves and tid in moves:
                contract, signed = moves[tid]
                expected[contract] = expected.get(contract, 0) + signed
        mism = compare({c: q for c, q in expected.items() if q}, broker)
        key = tuple(mism)
        act = bool(mism) if forced else bool(mism) and key == self.suspect
        self.unseen_before = set(unseen) - ingest
        self.suspect = () if act else key
        resolved = False
        if act:
            self.active = True
            self.mismatches += 1
        elif not mism and self.active:
            self.active = False
            resolved = True
        return Decision(mism, act, ingest, resolved)


# --------------------------------------------------------------------------
# broker rows -> typed values
# --------------------------------------------------------------------------

def cents(value) -> int | None:
    if value is None:
        return None
    return int((to_decimal(value) * 100).to_integral_value())


def broker_positions(rows: list[dict]) -> dict[str, tuple[int, Decimal | None]]:
    """Position/searchOpen rows -> contract -> (signed size, average price)."""
    out: dict[str, tuple[int, Decimal | None]] = {}
    for r in rows:
        size = int(r.get("size") or 0)
        typ = int(r.get("type") or 0)
        if size <= 0 or typ not in (1, 2):
            continue
        avg = r.get("averagePrice")
        out[r["contractId"]] = (size if typ == 1 else -size, None if avg is None else to_decimal(avg))
    return out


def fill_from_trade(row: dict, tags: dict[int, str]) -> Fill | None:
    """A Trade/search row -> Fill (leg and key from the order's customTag). None when voided or unusable."""
    if row.get("voided"):
        return None
    try:
        inst = instrument_for(row["contractId"])
        price_ticks = inst.to_ticks_rounded(row["price"])
    except (KeyError, InstrumentError):
        return None
    order_id = int(row.get("orderId") or 0)
    tag = tags.get(order_id, "")
    key = tag.rsplit(":", 2)[0] if tag.count(":") >= 2 else ""
    signal_id = key if key[:2] in SIGNAL_CODES and key[2:].isdigit() else ""
    return Fill(int(row["id"]), order_id, row["contractId"], leg_from_tag(tag) or "unknown",
                int(row.get("side", 0)), int(row.get("size") or 0), price_ticks,
                (cents(row.get("fees")) or 0) + (cents(row.get("commissions")) or 0), cents(row.get("profitAndLoss")),
                parse_time(row.get("creationTimestamp")), intent_key=key, signal_id=signal_id)
