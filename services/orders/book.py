"""The gateway's order book: one typed record per order it sent (or adopted), found by tag and,
once the broker has acked it, by order id.

A status changes only through states.next_status / states.after_cancel_sent, so a finished
order never comes back to life and a fill after our cancel still counts. Finished orders whose
intent is over are pruned after a short window (a day's orders must not pile up in memory); a
bounded note of the pruned ids lets a repeated report of one be ignored without asking the
journal, which stays the full record (the gateway looks a pruned order up there on a miss).
Pure: no I/O; tested in tests/unit/test_orders_book.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

from common import broker_codes
from services.orders.states import after_cancel_sent, next_status

JOURNAL_FIELDS = ("contract", "type", "side", "size", "price_ticks", "status", "fill_volume")


@dataclass(slots=True)
class BookOrder:
    """Our view of one broker order. Broker codes are plain ints (common/broker_codes.py)."""
    tag: str
    key: str
    leg: str
    attempt: int
    contract: str
    type: int
    side: int
    size: int
    price_ticks: int | None = None
    status: int = broker_codes.PENDING        # sent, no answer yet
    fill_volume: int = 0
    filled_price: str = ""
    id: int | None = None                    # the broker's order id, once known
    native: bool = False                     # an Auto-OCO bracket child (or an entry sent with one)
    via: str = ""                            # "closeContract": the broker made it, we adopted it
    sent_at: float = 0.0                     # monotonic time it was sent (0: adopted or restored)
    finished_at: float = 0.0                 # monotonic time it was first seen finished
    created_ns: int = 0                      # the broker's creationTimestamp (0: not reported yet)

    @property
    def finished(self) -> bool:
        return self.status in broker_codes.TERMINAL

    @property
    def working(self) -> bool:
        return self.status in broker_codes.WORKING

    @property
    def live(self) -> bool:
        return self.status in broker_codes.LIVE

    def journal_data(self) -> dict:
        """The journal's `data` column, in the format older journals hold (a restart reads it)."""
        d = {"contract": self.contract, "type": self.type, "side": self.side, "size": self.size,
             "price_ticks": self.price_ticks, "status": self.status, "fill_volume": self.fill_volume}
        if self.native:
            d["native"] = True
        if self.via:
            d["via"] = self.via
        return d

    @classmethod
    def from_journal(cls, row: dict, now: float = 0.0) -> "BookOrder":
        """A journal row ({tag, order_id, key, leg, attempt, data}) back into a record."""
        d = row.get("data") or {}
        status = int(d.get("status", broker_codes.PENDING))
        return cls(row["tag"], row["key"], row["leg"], int(row.get("attempt") or 0), d.get("contract") or "",
                   int(d.get("type") or 0), int(d.get("side") or 0), int(d.get("size") or 0), d.get("price_ticks"),
                   status, int(d.get("fill_volume") or 0), id=row.get("order_id") or None,
                   native=bool(d.get("native")), via=d.get("via") or "",
                   finished_at=now if status in broker_codes.TERMINAL else 0.0)


class OrderBook:
    """Orders by tag and by id; pruning of finished ones. `keep_s`: how long a finished order of
    an intent that is over stays in memory; `remember`: how many pruned ids are noted."""

    def __init__(self, keep_s: float = 60.0, remember: int = 4096):
        self.keep_s = keep_s
        self.remember = remember
        self._by_tag: dict[str, BookOrder] = {}
        self._by_id: dict[int, BookOrder] = {}
        self._by_key: dict[str, list[BookOrder]] = {}
        self._pruned: dict[int, int] = {}       # order id -> its final status, oldest first
        self.pruned_total = 0
        self.high_id = 0                        # the highest order id ever held (pruned ones too)

    # -- lookups -----------------------------------------------------------
    def __len__(self) -> int:
        return len(self._by_tag)

    def __iter__(self) -> Iterator[BookOrder]:
        """Every order the broker has acked (has an id)."""
        return iter(list(self._by_id.values()))

    def __contains__(self, oid: int) -> bool:
        return oid in self._by_id

    def get(self, oid: int | None) -> BookOrder | None:
        return None if oid is None else self._by_id.get(oid)

    def by_tag(self, tag: str) -> BookOrder | None:
        return self._by_tag.get(tag)

    def of_key(self, key: str, leg: str | None = None) -> list[BookOrder]:
        return [o for o in self._by_key.get(key, ()) if leg is None or o.leg == leg]

    def has_key(self, key: str) -> bool:
        return key in self._by_key

    def working(self, contract: str | None = None, leg: str | None = None) -> list[BookOrder]:
        return [o for o in self._by_id.values() if o.working and (contract is None or o.contract == contract)
                and (leg is None or o.leg == leg)]

    def live(self) -> list[BookOrder]:
        return [o for o in self._by_id.values() if o.live]

    def next_attempt(self, key: str, leg: str) -> int:
        """The next attempt number of key:leg among the orders held (all of a key are held or none)."""
        return 1 + max((o.attempt for o in self._by_key.get(key, ()) if o.leg == leg), default=-1)

    def placing_since(self, t: float) -> bool:
        """An order sent after monotonic time t whose id is not known yet."""
        return any(o.id is None and o.sent_at > t for o in self._by_tag.values())

    def max_id(self) -> int:
        """The highest order id ever held: an order newer than this is newer than all of ours."""
        return self.high_id

    def pruned_status(self, oid: int) -> int | None:
        """The final status of a recently pruned order (None: not noted)."""
        return self._pruned.get(oid)

    def note_pruned(self, oid: int, status: int) -> None:
        """Note a finished order that is not held (read back from the journal), oldest out first."""
        self._pruned.pop(oid, None)
        self._pruned[oid] = status
        while len(self._pruned) > self.remember:
            del self._pruned[next(iter(self._pruned))]

    # -- changes -----------------------------------------------------------
    def add(self, order: BookOrder) -> BookOrder:
        """A new order (sent, adopted, or read back from the journal)."""
        old = self._by_tag.get(order.tag)
        if old is not None:
            self._drop(old)
        self._by_tag[order.tag] = order
        self._by_key.setdefault(order.key, []).append(order)
        if order.id is not None:
            self._by_id[order.id] = order
            self._pruned.pop(order.id, None)
            self.high_id = max(self.high_id, order.id)
        return order

    def restore(self, rows: Iterable[dict], now: float = 0.0) -> None:
        for row in rows:
            self.add(BookOrder.from_journal(row, now))

    def register(self, tag: str, oid: int) -> BookOrder:
        """The broker acked `tag` as order `oid`."""
        order = self._by_tag[tag]
        order.id = oid
        self._by_id[oid] = order
        self._pruned.pop(oid, None)
        self.high_id = max(self.high_id, oid)
        return order

    def update(self, order: BookOrder, now: float, *, status: int | None = None, fill_volume: int | None = None,
               size: int | None = None, price_ticks: int | None = None, filled_price: str | None = None) -> bool:
        """Apply what the broker reported; True if anything changed. `status` goes through
        states.next_status (a finished order stays finished unless it was filled)."""
        changed = False
        if status is not None:
            changed |= self._set_status(order, status, now)
        for name, value in (("fill_volume", fill_volume), ("size", size), ("price_ticks", price_ticks),
                            ("filled_price", filled_price)):
            if value is not None and getattr(order, name) != value:
                setattr(order, name, value)
                changed = True
        return changed

    def cancel_sent(self, oid: int) -> None:
        """We asked the broker to cancel it: PendingCancel until the broker says how it ended."""
        order = self._by_id.get(oid)
        if order is not None:
            order.status = after_cancel_sent(order.status)

    def _set_status(self, order: BookOrder, reported: int, now: float) -> bool:
        new = next_status(order.status, reported)
        if new == order.status:
            return False
        order.status = new
        if new in broker_codes.TERMINAL and not order.finished_at:
            order.finished_at = now
        return True

    def prune(self, now: float, active_keys: set[str] | frozenset[str]) -> int:
        """Forget the orders of every key that is over: not an active intent, every order of it
        finished (or never acked) for at least keep_s. A key goes whole, so next_attempt stays
        right for the keys held. Returns how many orders were forgotten."""
        gone = 0
        for key, orders in list(self._by_key.items()):
            if key in active_keys:
                continue
            if all(self._over(o, now) for o in orders):
                for o in list(orders):
                    self._drop(o)
                    gone += 1
        self.pruned_total += gone
        return gone

    def _over(self, order: BookOrder, now: float) -> bool:
        if order.id is None:                    # never acked: its placement gave up long ago
            return order.sent_at == 0.0 or now - order.sent_at > self.keep_s
        return order.finished and now - order.finished_at > self.keep_s

    def _drop(self, order: BookOrder) -> None:
        self._by_tag.pop(order.tag, None)
        same = self._by_key.get(order.key)
        if same is not None:
            same[:] = [o for o in same if o is not order]
            if not same:
                del self._by_key[order.key]
        if order.id is not None and self._by_id.get(order.id) is order:
            del self._by_id[order.id]
            self.note_pruned(order.id, order.status)
