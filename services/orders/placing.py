"""Placing and cancelling orders at the broker: tags journaled before they go out, an
unknown outcome looked up by tag, fresh views of working orders and positions.

A part of the Gateway (services/orders/gateway.py): methods on its state, run on the loop's thread.
"""
from __future__ import annotations

import time

from loguru import logger

from common.instruments import instrument_for
from common.topstepx.rest import BrokerError, OutcomeUnknown, TopstepXError
from services.orders import broker_io
from services.orders import logic
from services.orders.broker_io import Flow, Sleep, call
from services.orders.errors import Unconfirmed
from services.orders.book import BookOrder


class PlacingMixin:
    def send(self, key: str, leg: str, contract: str, type_: int, side: int, size: int,
             price_ticks: int | None = None, extra: dict | None = None, prio: int = broker_io.ENTRY,
             bracket: tuple[int, int] | None = None) -> Flow:
        """Place one order with tag key:leg:attempt, journaled before it goes out. Returns the order id.
        Raises BrokerError (refused), RateLimited, Unconfirmed (outcome unknown and not found by tag)."""
        attempt = self.next_attempt(key, leg)
        tag = logic.make_tag(key, leg, attempt)
        inst = instrument_for(contract)
        row = self.book.add(BookOrder(tag, key, leg, attempt, contract, type_, side, size, price_ticks,
                                      native=bool((extra or {}).get("native")), sent_at=time.monotonic()))
        self.journal.put_order(tag, key, leg, attempt, row.journal_data())
        # the order line is written after the send (below): ~30 us of logging never delays the request
        price = inst.to_price(price_ticks) if price_ticks is not None else None
        self.stats["orders_sent"] += 1
        t0 = time.perf_counter_ns()
        sent_wall = time.time_ns()
        try:
            while True:
                kw = {} if bracket is None else {"stop_loss_ticks": bracket[0], "take_profit_ticks": bracket[1]}
                try:
                    oid = (yield call(self.rest.place_order, self.acct, contract, type_, side, size,
                                      limit_price=price if type_ == logic.LIMIT else None,
                                      stop_price=price if type_ == logic.STOP else None, custom_tag=tag, prio=prio,
                                      **kw))
                    break
                except BrokerError as exc:
                    if bracket is None or not logic.bracket_mode_refusal(exc.code, exc.message) or \
                            exc.payload.get("orderId"):
                        raise
                    # the account is in Position Brackets mode: no order was created (no orderId),
                    # so the same tag goes out again without the bracket; remembered for next time
                    logger.warning(f"ORDER: native brackets refused ({exc.message}); client-side OCO from now on")
                    self.set_native_brackets(False)
                    bracket = None
                    row.native = False
        except BrokerError as exc:
            self.stats["rejects"] += 1
            oid = exc.payload.get("orderId")
            if oid:
                self._register(tag, int(oid))
                self.book.update(row, time.monotonic(), status=logic.REJECTED)
            logger.info(logic.order_line(contract, type_, side, size, None if type_ == logic.MARKET else price_ticks))
            logger.warning(f"ORDER: {tag} rejected by the broker: errorCode {exc.code} {exc.message}")
            raise
        except OutcomeUnknown as exc:
            self.stats["unknown_outcomes"] += 1
            if prio <= broker_io.PROTECT:
                # protection cannot wait for searches that fail as well: send the same tag again.
                # The broker refuses a tag it already has, so this can never make a second order
                got = yield from self._resend_same_tag(tag, row, contract, type_, side, size, price, prio)
                if got is not None:
                    self._register(tag, got)
                    return got
            logger.warning(f"ORDER: {tag}: outcome unknown ({exc}); looking it up by tag")
            found = (yield from self.lookup_tag(tag, prio))
            if found is None:
                raise Unconfirmed(f"{tag}: {exc}; not found at the broker") from None
            oid = int(found["id"])
            logger.warning(f"ORDER: {tag} exists at the broker as order {oid} (status {found.get('status')})")
            self._register(tag, oid)
            self.on_order(found)
            return oid
        self.bench.append({"leg": leg, "recv_ns": self.cmd_t0, "sent_ns": t0, "ack_ns": time.perf_counter_ns()})
        if leg == "entry" and self.cmd_hops:
            self.hops.add({**self.cmd_hops, "order_sent": sent_wall, "order_ack": time.time_ns()})
        logger.info(logic.order_line(contract, type_, side, size, None if type_ == logic.MARKET else price_ticks))
        if bracket is not None:
            self.set_native_brackets(True)
        self._register(tag, oid)
        return oid

    def _resend_same_tag(self, tag: str, row: BookOrder, contract: str, type_: int, side: int, size: int, price,
                         prio: int) -> Flow:
        """The order id once the broker has the order with this tag (the hub told us, or a resend
        went through); None when it refuses the tag as used (it exists: look it up) or keeps failing."""
        end = time.monotonic() + self.sect.protect_resend_s
        attempt = 0
        while time.monotonic() < end:
            attempt += 1
            if row.id:
                return row.id                           # its order event came on the hub
            yield Sleep(min(0.5, 0.1 * attempt))
            if row.id:
                return row.id
            try:
                oid = yield call(self.rest.place_order, self.acct, contract, type_, side, size,
                                 limit_price=price if type_ == logic.LIMIT else None,
                                 stop_price=price if type_ == logic.STOP else None, custom_tag=tag, prio=prio)
                logger.warning(f"ORDER: {tag} placed by a resend of the same tag (the first try's outcome was unknown)")
                return int(oid)
            except BrokerError as exc:
                if logic.tag_in_use(exc.code, exc.message):
                    logger.warning(f"ORDER: {tag}: the broker already has it ({exc.message})")
                    for _ in range(20):                 # its order event is on the way
                        if row.id:
                            return row.id
                        yield Sleep(0.1)
                    return None                         # look it up by the tag
                raise
            except TopstepXError as exc:
                logger.warning(f"ORDER: {tag}: resend {attempt} failed: {exc}")
        return None

    def set_native_brackets(self, on: bool) -> None:
        if self.native_brackets is not on:
            self.native_brackets = on
            self.journal.set("native_brackets", on)

    def placing_since(self, t: float) -> bool:
        """An order of ours sent after monotonic time t whose id we do not know yet."""
        return self.book.placing_since(t)

    def _register(self, tag: str, oid: int) -> None:
        self.book.register(tag, oid)
        self.journal.set_order_id(tag, oid)
        self.parked_at.pop(oid, None)
        for raw in self.parked.pop(oid, []):           # its fills came before the broker's ack
            self.on_trade(raw)

    def lookup_tag(self, tag: str, prio: int = broker_io.POLL) -> Flow:
        """The broker's order with this customTag; None if two searches agree it does not exist.
        Raises Unconfirmed if the broker cannot be asked within lookup_timeout_s."""
        deadline = time.monotonic() + self.sect.lookup_timeout_s
        misses = 0
        while True:
            try:
                for o in (yield call(self.rest.orders, self.acct, self.since(), prio=prio)):
                    if o.get("customTag") == tag:
                        return o
                misses += 1
                if misses >= 2:
                    return None
            except TopstepXError as exc:
                logger.warning(f"ORDER: looking up {tag} failed: {exc}")
            if time.monotonic() > deadline:
                raise Unconfirmed(f"{tag}: could not confirm within {self.sect.lookup_timeout_s} s")
            yield Sleep(0.3)

    def cancel(self, oid: int, prio: int = broker_io.PROTECT) -> Flow:
        try:
            (yield call(self.rest.cancel_order, self.acct, oid, prio=prio))
            o = self.book.get(oid)
            logger.info(f"ORDER: cancel {oid} ({o.tag if o else '?'})")
            self.book.cancel_sent(oid)
            return True
        except BrokerError as exc:        # not found / already terminal: nothing works any more
            logger.info(f"ORDER: cancel {oid}: {exc}")
            return True
        except TopstepXError as exc:
            logger.warning(f"ORDER: cancel {oid} failed: {exc}")
            return False

    def working_orders(self, contract: str | None = None, prio: int = broker_io.EXIT) -> Flow:
        got = yield call(self.rest.open_orders, self.acct, prio=prio)
        return [o for o in got if contract is None or o.get("contractId") == contract]

    def cancel_all(self, contract: str | None = None, prio: int = broker_io.EXIT) -> Flow:
        """Cancel every working order (of a contract) and verify; returns ids still working. The
        orders we know are cancelled at once, all together; the broker's list then confirms."""
        left = [o.id for o in self.book.working(contract)]
        yield from self.cancel_each(left, prio)
        for round_ in range(3):
            try:
                working = (yield from self.working_orders(contract, prio))
            except TopstepXError as exc:
                logger.warning(f"ORDER: cannot list working orders: {exc}")
                yield Sleep(0.3)
                continue
            left = [int(o["id"]) for o in working]
            if not left:
                return []
            yield from self.cancel_each(left, prio)
            yield Sleep(0.05 * (round_ + 1))
        return left

    def cancel_each(self, oids: list[int], prio: int) -> Flow:
        """Cancel these orders side by side (one broker call each, in parallel on the pool)."""
        tasks = [self.spawn(self.cancel(oid, prio), f"cancel-{oid}") for oid in oids]
        while not all(t.done for t in tasks):
            yield Sleep(0.02)

    def broker_positions(self, prio: int = broker_io.EXIT) -> Flow:
        """The broker's positions from a fresh REST answer. It replaces the view wholesale: a
        contract the broker does not list is flat (a cached position is never an order's basis)."""
        fresh: dict[str, logic.BrokerPosition] = {}
        for p in (yield call(self.rest.open_positions, self.acct, prio=prio)):
            bp = logic.position_of(p)
            if bp is not None:
                fresh[bp.contract] = bp
        self.positions = fresh
        return dict(fresh)

    def broker_position(self, contract: str, prio: int = broker_io.EXIT) -> Flow:
        return (yield from self.broker_positions(prio)).get(contract)
