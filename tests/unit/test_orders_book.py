"""The gateway's order book (services/orders/book.py): lookups, status rules, pruning."""
from __future__ import annotations

from common import broker_codes as codes
from services.orders.book import BookOrder, OrderBook

C = "CON.F.US.MES.H26"


def order(tag="K1:entry:0", key="K1", leg="entry", attempt=0, **kw) -> BookOrder:
    return BookOrder(tag, key, leg, attempt, C, codes.MARKET, codes.BUY, 1, **kw)


def test_lookup_by_tag_before_the_ack_and_by_id_after():
    book = OrderBook()
    o = book.add(order(sent_at=10.0))
    assert book.by_tag("K1:entry:0") is o and book.get(7) is None and 7 not in book
    assert book.placing_since(5.0) and not book.placing_since(11.0)
    book.register("K1:entry:0", 7)
    assert book.get(7) is o and o.id == 7 and 7 in book and list(book) == [o]
    assert not book.placing_since(5.0)
    assert book.next_attempt("K1", "entry") == 1 and book.next_attempt("K1", "stop") == 0
    assert book.next_attempt("K2", "entry") == 0


def test_a_finished_order_never_comes_back_but_a_fill_after_cancel_counts():
    book = OrderBook()
    o = book.add(order(id=1, status=codes.OPEN))
    book.cancel_sent(1)
    assert o.status == codes.PENDING_CANCEL and o.live and not o.working
    assert not book.update(o, 1.0, status=codes.OPEN)          # a late Open does not undo our cancel
    assert book.update(o, 2.0, status=codes.FILLED, fill_volume=1)
    assert o.finished and o.finished_at == 2.0
    assert not book.update(o, 3.0, status=codes.CANCELLED)     # filled is final
    assert o.status == codes.FILLED and o.finished_at == 2.0


def test_working_and_live_views():
    book = OrderBook()
    book.add(order("K1:entry:0", id=1, status=codes.FILLED))
    stop = book.add(order("K1:stop:0", leg="stop", id=2, status=codes.OPEN))
    child = book.add(order("K1:entry:0-TP", leg="target", id=3, status=codes.SUSPENDED, native=True))
    book.add(order("K2:entry:0", key="K2", status=codes.PENDING))          # not acked: not listed
    assert book.working() == [stop] and book.working(leg="entry") == [] and book.working("other") == []
    assert book.live() == [stop, child]
    assert [o.tag for o in book.of_key("K1")] == ["K1:entry:0", "K1:stop:0", "K1:entry:0-TP"]


def test_journal_round_trip_keeps_the_old_format():
    o = order(id=5, status=codes.OPEN, price_ticks=24000, via="closeContract")
    d = o.journal_data()
    assert d == {"contract": C, "type": codes.MARKET, "side": codes.BUY, "size": 1, "price_ticks": 24000,
                 "status": codes.OPEN, "fill_volume": 0, "via": "closeContract"}
    back = BookOrder.from_journal({"tag": o.tag, "order_id": 5, "key": "K1", "leg": "entry", "attempt": 0, "data": d})
    assert (back.id, back.status, back.price_ticks, back.via) == (5, codes.OPEN, 24000, "closeContract")
    # a row written by an older gateway: no status yet means sent and not answered
    old = BookOrder.from_journal({"tag": "K9:stop:1", "order_id": None, "key": "K9", "leg": "stop", "attempt": 1,
                                  "data": {"contract": C, "type": codes.STOP, "side": 1, "size": 2}})
    assert old.status == codes.PENDING and old.attempt == 1 and old.price_ticks is None


def test_prune_forgets_a_finished_key_whole_after_the_window():
    book = OrderBook(keep_s=60.0, remember=2)
    e = book.add(order(id=1, status=codes.OPEN))
    book.update(e, 100.0, status=codes.FILLED)
    s = book.add(order("K1:stop:0", leg="stop", id=2, status=codes.OPEN))
    assert book.prune(1000.0, set()) == 0                      # the stop still works: the key stays
    book.update(s, 200.0, status=codes.CANCELLED)
    assert book.prune(250.0, set()) == 0                       # too recent
    assert book.prune(1000.0, {"K1"}) == 0                     # its intent is still active
    assert book.prune(1000.0, set()) == 2
    assert len(book) == 0 and book.get(1) is None and book.by_tag("K1:stop:0") is None
    assert book.pruned_status(1) == codes.FILLED and book.pruned_status(2) == codes.CANCELLED
    assert not book.has_key("K1") and book.pruned_total == 2
    assert book.max_id() == 2                                  # newer-than checks still see the pruned ids


def test_prune_drops_an_order_never_acked_and_bounds_its_notes():
    book = OrderBook(keep_s=60.0, remember=2)
    book.add(order("K1:entry:0", sent_at=10.0))                # placement gave up, no id
    assert book.prune(50.0, set()) == 0 and book.prune(80.0, set()) == 1
    for n in range(5):
        o = book.add(order(f"R{n}:stop:0", key=f"R{n}", leg="stop", id=100 + n))
        book.update(o, 0.5, status=codes.CANCELLED)
    assert book.prune(100.0, set()) == 5
    assert [book.pruned_status(100 + n) for n in range(5)] == [None, None, None, codes.CANCELLED, codes.CANCELLED]


def test_an_order_added_again_is_no_longer_noted_as_pruned():
    book = OrderBook(keep_s=0.0)
    o = book.add(order(id=1))
    book.update(o, 1.0, status=codes.CANCELLED)
    book.prune(2.0, set())
    again = book.add(order(id=1, status=codes.CANCELLED))
    assert book.get(1) is again and book.pruned_status(1) is None
