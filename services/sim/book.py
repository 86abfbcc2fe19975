"""A synthesized order book for GatewayDepth: several price levels per side around the tape's
derived best bid/ask, kept consistent with the trades.

The recorded data has trades only, so the sizes are invented (deterministic per price):
a level's size is `base(price) - traded there while it was the best`, never below 1. A
trade therefore visibly eats the level it hit, and a level that leaves the window (or
turns into the other side) is removed with volume 0. Bids are always below asks: a book
built from these updates never crosses. Pure: no sockets, no clock.
"""
from __future__ import annotations

DOM_ASK, DOM_BID, DOM_BEST_ASK, DOM_BEST_BID, DOM_RESET = 1, 2, 3, 4, 6     # DomType (topstepx_api.md §2)


def base_size(price: int, side: int, depth: int) -> int:
    """Deterministic synthetic resting size; deeper levels hold more, as books usually do."""
    h = (price * 2654435761 + side * 40503) >> 7
    return 5 + h % 40 + 4 * depth


class Book:
    def __init__(self, levels: int = 10):
        self.levels = levels
        self.bids: dict[int, int] = {}      # price ticks -> size
        self.asks: dict[int, int] = {}
        self.best: tuple[int, int] | None = None
        self._eaten: dict[tuple[int, int], int] = {}    # (side, price) -> traded there while best

    def _target(self, bid: int, ask: int) -> tuple[dict[int, int], dict[int, int]]:
        bids = {bid - k: max(1, base_size(bid - k, DOM_BID, k) - self._eaten.get((DOM_BID, bid - k), 0))
                for k in range(self.levels)}
        asks = {ask + k: max(1, base_size(ask + k, DOM_ASK, k) - self._eaten.get((DOM_ASK, ask + k), 0))
                for k in range(self.levels)}
        return bids, asks

    def update(self, bid: int, ask: int, trade_price: int | None = None, trade_size: int = 0
               ) -> list[tuple[int, int, int]]:
        """Move the book to best bid/ask (after an optional trade); returns the changes as
        (DomType, price ticks, volume), volume 0 = level removed; best bid/ask entries when
        they change. Empty when nothing changed."""
        if bid >= ask:
            raise ValueError(f"crossed quote {bid} >= {ask}")
        if self.best is not None and self.best != (bid, ask):
            # the old best levels are no longer the best: what was eaten there is forgotten
            self._eaten = {k: v for k, v in self._eaten.items() if k in ((DOM_BID, bid), (DOM_ASK, ask))}
        if trade_price is not None and trade_size > 0:
            if trade_price == ask:
                self._eaten[(DOM_ASK, ask)] = self._eaten.get((DOM_ASK, ask), 0) + trade_size
            elif trade_price == bid:
                self._eaten[(DOM_BID, bid)] = self._eaten.get((DOM_BID, bid), 0) + trade_size
        bids, asks = self._target(bid, ask)
        out: list[tuple[int, int, int]] = []
        for side, old, new in ((DOM_BID, self.bids, bids), (DOM_ASK, self.asks, asks)):
            for p in sorted(old.keys() - new.keys()):
                out.append((side, p, 0))
            for p in sorted(new):
                if old.get(p) != new[p]:
                    out.append((side, p, new[p]))
        if self.best != (bid, ask):
            out.append((DOM_BEST_BID, bid, bids[bid]))
            out.append((DOM_BEST_ASK, ask, asks[ask]))
        self.bids, self.asks, self.best = bids, asks, (bid, ask)
        return out

    def snapshot(self) -> list[tuple[int, int, int]]:
        """A Reset, then every level and the best bid/ask: what a new subscriber gets first."""
        if self.best is None:
            return []
        bid, ask = self.best
        return ([(DOM_RESET, 0, 0)] + [(DOM_BID, p, v) for p, v in sorted(self.bids.items(), reverse=True)]
                + [(DOM_ASK, p, v) for p, v in sorted(self.asks.items())]
                + [(DOM_BEST_BID, bid, self.bids[bid]), (DOM_BEST_ASK, ask, self.asks[ask])])
