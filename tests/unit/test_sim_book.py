"""The simulator's synthesized order book (services/sim/book.py), pure."""
from __future__ import annotations

import pytest

from services.sim.book import DOM_ASK, DOM_BEST_ASK, DOM_BEST_BID, DOM_BID, DOM_RESET, Book


def apply(bids: dict, asks: dict, changes) -> None:
    for kind, price, vol in changes:
        side = bids if kind == DOM_BID else asks if kind == DOM_ASK else None
        if side is None:
            continue
        if vol == 0:
            del side[price]         # KeyError: a removal of a level never sent
        else:
            side[price] = vol


def test_levels_move_remove_and_never_cross():
    book, bids, asks = Book(levels=5), {}, {}
    apply(bids, asks, book.update(100, 101))
    assert sorted(bids) == [96, 97, 98, 99, 100] and sorted(asks) == [101, 102, 103, 104, 105]
    ch = book.update(102, 103, trade_price=103, trade_size=2)        # up two ticks
    assert (DOM_ASK, 101, 0) in ch and (DOM_ASK, 102, 0) in ch and (DOM_BID, 96, 0) in ch
    assert (DOM_BEST_BID, 102, book.bids[102]) in ch and ch[-1][:2] == (DOM_BEST_ASK, 103)
    apply(bids, asks, ch)
    assert sorted(bids) == [98, 99, 100, 101, 102] and sorted(asks) == [103, 104, 105, 106, 107]
    assert max(bids) < min(asks) and (bids, asks) == (book.bids, book.asks)


def test_trades_eat_the_best_level_and_it_is_forgotten_when_the_best_moves():
    book = Book(levels=3)
    book.update(100, 101)
    full = book.asks[101]
    ch = book.update(100, 101, trade_price=101, trade_size=3)
    assert ch == [(DOM_ASK, 101, full - 3)]                        # only that level changed
    assert book.update(100, 101) == []                             # nothing new: nothing sent
    book.update(101, 102)
    book.update(100, 101)                                          # back: the level is refilled
    assert book.asks[101] == full


def test_snapshot_starts_with_a_reset_and_holds_the_book():
    book = Book(levels=2)
    assert book.snapshot() == []
    book.update(100, 101)
    snap = book.snapshot()
    assert snap[0] == (DOM_RESET, 0, 0)
    assert [(k, p) for k, p, _ in snap[1:]] == [(DOM_BID, 100), (DOM_BID, 99), (DOM_ASK, 101), (DOM_ASK, 102),
                                               (DOM_BEST_BID, 100), (DOM_BEST_ASK, 101)]
    with pytest.raises(ValueError):
        book.update(101, 101)
