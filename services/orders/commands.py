"""Commands: the REP socket's requests, answered at once or as flows (an early
`accepted`, the outcome on the bus).

A part of the Gateway (services/orders/gateway.py): methods on its state, run on the loop's thread.
"""
from __future__ import annotations

import time

from loguru import logger

from common.messages import OrderCommand, OrderReply
from common.topstepx.rest import BrokerError, RateLimited, TopstepXError
from services.orders import broker_io
from services.orders import logic
from services.orders.broker_io import Flow, Task
from services.orders.errors import Unconfirmed
from services.orders.journal import as_record
from services.orders.states import Intent
from services.orders.states import IntentState


class CommandsMixin:
    def handle(self, cmd: OrderCommand, hops: dict[str, int] | None = None) -> OrderReply:
        """One command from the REP socket. `hops` are the envelope's stage timestamps (tick
        received ... engine decided); the gateway adds its own for the latency figures."""
        self.cmd_t0 = time.perf_counter_ns()
        self.cmd_hops = {**(hops or {}), "cmd_recv": time.time_ns()}
        self.stats["commands"] += 1
        if cmd.action == "status":
            return self.status(cmd)
        if cmd.action not in ("enter", "exit", "reverse", "flatten", "cancel_all", "halt", "resume"):
            return OrderReply(cmd.key, False, "error", f"unknown action {cmd.action!r}")
        if not cmd.key:
            return OrderReply(cmd.key, False, "error", "missing idempotency key")
        prev = self.journal.intent(cmd.key)
        if prev is not None:
            if prev["reply"] is not None:
                return OrderReply(**prev["reply"])
            if cmd.key in self.commands:
                return self.commands[cmd.key]
            return OrderReply(cmd.key, False, "error", "command with this key is still being processed")
        if cmd.action == "enter":
            # its intent and its entry's row in one commit: send() commits it just before the
            # order goes out (journal before send); a refusal's reply is the row (finish_command)
            with self.journal.transaction():
                task = self.spawn(self.run_command(cmd), f"{cmd.action} {cmd.key}")
            return self._pending(cmd, task)
        self.journal.put_intent(cmd.key, cmd.action, "new", {"cmd": as_record(cmd)})
        if cmd.action in ("halt", "resume"):           # no broker call: answered at once
            return self.finish_command(cmd, getattr(self, f"cmd_{cmd.action}")(cmd))
        if cmd.action == "flatten":
            self.drop_queued(broker_io.ENTRY, "flatten")      # queued entries would only be closed again
        return self._pending(cmd, self.spawn(self.run_command(cmd), f"{cmd.action} {cmd.key}"))

    def _pending(self, cmd: OrderCommand, task: Task) -> OrderReply | Task:
        if task.done:
            return task.result
        self.commands[cmd.key] = task
        task.on_done(lambda t, key=cmd.key: self.commands.pop(key, None))
        return task

    def run_command(self, cmd: OrderCommand) -> Flow:
        try:
            reply = yield from getattr(self, f"cmd_{cmd.action}")(cmd)
        except Exception as exc:   # never leave a key without an answer
            logger.exception(f"ORDER: {cmd.action} {cmd.key} failed: {exc}")
            reply = OrderReply(cmd.key, False, "error", f"{type(exc).__name__}: {exc}")
        return self.finish_command(cmd, reply)

    def finish_command(self, cmd: OrderCommand, reply: OrderReply) -> OrderReply:
        self.journal.set_reply(cmd.key, as_record(reply), done_if_new=True, action=cmd.action,
                               cmd=as_record(cmd))
        return reply

    def command_answered_early(self, task: Task) -> None:
        """The socket answered `accepted` before the outcome was known: the outcome follows on
        the bus (an OrderReply on orders_pub, keyed by the command's key)."""
        def publish(t: Task) -> None:
            if isinstance(t.result, OrderReply):
                logger.info(f"ORDER: outcome of {t.name}: {t.result.status} {t.result.message}".rstrip())
                self.publish(t.result, key=f"reply:{t.result.key}", forget=True)
        task.on_done(publish)

    def status(self, cmd: OrderCommand) -> OrderReply:
        pos = self.positions.get(cmd.contract or self.contract)
        working = [{"order_id": o.id, "tag": o.tag, "leg": o.leg, "type": o.type, "side": o.side, "size": o.size,
                    "status": o.status} for o in self.book.live()]
        return OrderReply(cmd.key, True, "ok", detail={
            "halted": self.halted, "halt_reason": self.halt_reason, "working_orders": working,
            "position": ({"contract": pos.contract, "direction": pos.direction, "size": pos.size} if pos else None),
            "in_flight": [k for k, it in self.intents.items() if it.in_flight],
            "hub": self.hub_state, "day_pnl_cents": self.day_pnl_cents(),
            "entries_ok": self.hub_reconciled,
            "latency_samples": list(self.bench) if cmd.reason == "bench" else []})

    def entry_check(self, contract: str, size: int) -> tuple[str, str] | None:
        now = self.now_ns()
        known = now > 0
        it = self.active_intent(contract)
        pos = self.positions.get(contract)
        return logic.entry_refusal(
            halted=self.halted, halt_reason=self.halt_reason, size=size, max_contracts=self.max_contracts,
            open_size=(pos.size if pos else 0) or (it.filled if it else 0),
            in_flight=it is not None, past_flatten=known and self.calendar.must_be_flat(now),
            entries_allowed=(not known) or self.calendar.entries_allowed(now),
            broker_ok=self.hub_reconciled)

    def cmd_enter(self, cmd: OrderCommand) -> Flow:
        contract = cmd.contract or self.contract
        if cmd.direction not in (1, -1):
            return OrderReply(cmd.key, False, "error", f"direction must be +1 or -1, not {cmd.direction}")
        refusal = self.entry_check(contract, cmd.size)
        if refusal:
            logger.warning(f"ORDER: entry {cmd.key} {refusal[0]}: {refusal[1]}")
            return OrderReply(cmd.key, False, refusal[0], refusal[1])
        return (yield from self._enter(cmd, contract))

    def _enter(self, cmd: OrderCommand, contract: str) -> Flow:
        it = Intent(cmd.key, contract, cmd.direction, cmd.size,
                    stop_ticks=cmd.stop_ticks or self.sect.repair_stop_ticks,
                    target_ticks=cmd.target_ticks or self.sect.repair_target_ticks,
                    signal_id=cmd.signal_id or cmd.key, model_version=cmd.model_version, since=time.monotonic())
        self.intents[cmd.key] = it
        self.journal.put_intent(cmd.key, cmd.action, it.state.value, it.as_dict())
        size = cmd.size
        while True:
            if self.halted or self.flatten_pending:
                self.save_intent(it.to(IntentState.FAILED))
                return OrderReply(cmd.key, False, "halted", f"gateway halted: {self.halt_reason or 'flattening'}")
            try:
                bracket = None if self.native_brackets is False else \
                    logic.native_bracket_ticks(cmd.direction, it.stop_ticks, it.target_ticks)
                oid = (yield from self.send(cmd.key, "entry", contract, logic.MARKET, logic.entry_side(cmd.direction), size,
                                            bracket=bracket))
                it.native = bracket is not None and self.native_brackets is True
                break
            except BrokerError as exc:
                if exc.code == logic.INSUFFICIENT_FUNDS and logic.reduced_size(size) > 0:
                    size = logic.reduced_size(size)
                    logger.warning(f"ORDER: insufficient margin; retrying {cmd.key} with size {size}")
                    continue
                self.save_intent(it.to(IntentState.REJECTED))
                return OrderReply(cmd.key, False, "rejected", f"errorCode {exc.code} {exc.message}".strip(),
                                  {"code": exc.code, "order_id": exc.payload.get("orderId")})
            except Unconfirmed as exc:
                it.since = time.monotonic()
                self.save_intent(it.to(IntentState.UNKNOWN))
                self.risk("order_unknown", True, f"entry {cmd.key}: {exc}; resolving, flatten if unconfirmed", "ERROR")
                return OrderReply(cmd.key, False, "error", f"outcome unknown: {exc}", {"in_flight": True})
            except (RateLimited, TopstepXError) as exc:
                self.save_intent(it.to(IntentState.FAILED))
                return OrderReply(cmd.key, False, "error", str(exc))
        it.entry_oid, it.size = oid, size
        if it.state is IntentState.PLACING:            # a fill may have come in first
            it.to(IntentState.WORKING)
        self.save_intent(it)
        return OrderReply(cmd.key, True, "accepted", "", {"order_id": oid, "size": size})

    def cmd_exit(self, cmd: OrderCommand) -> Flow:
        contract = cmd.contract or self.contract
        ok, _, msg = (yield from self.close_contract(contract, cmd.key, "exit"))
        if not ok:
            return OrderReply(cmd.key, False, "error", msg)
        return OrderReply(cmd.key, True, "flat", msg)

    def cmd_reverse(self, cmd: OrderCommand) -> Flow:
        contract = cmd.contract or self.contract
        if cmd.direction not in (1, -1):
            return OrderReply(cmd.key, False, "error", f"direction must be +1 or -1, not {cmd.direction}")
        if self.halted:
            return OrderReply(cmd.key, False, "halted", f"gateway halted: {self.halt_reason}")
        ok, exit_oid, msg = (yield from self.close_contract(contract, cmd.key, "exit"))
        if not ok:
            return OrderReply(cmd.key, False, "error", f"exit failed: {msg}")
        refusal = self.entry_check(contract, cmd.size)
        if refusal:
            return OrderReply(cmd.key, True, refusal[0], f"exited; entry {refusal[0]}: {refusal[1]}",
                              {"exit_order_id": exit_oid})
        rep = (yield from self._enter(cmd, contract))
        rep.detail["exit_order_id"] = exit_oid
        return rep

    def cmd_flatten(self, cmd: OrderCommand) -> Flow:
        ok = (yield from self.flatten(cmd.key, "flatten", cmd.reason or "flatten command"))
        return OrderReply(cmd.key, ok, "flat" if ok else "error", "" if ok else "not verified flat; retrying")

    def cmd_cancel_all(self, cmd: OrderCommand) -> Flow:
        left = (yield from self.cancel_all())
        return OrderReply(cmd.key, not left, "cancelled" if not left else "error",
                          "" if not left else f"{len(left)} orders still working", {"working": left})

    def cmd_halt(self, cmd: OrderCommand) -> OrderReply:
        self.set_halt(cmd.reason or "operator halt", "manual")
        self.drop_queued(broker_io.ENTRY, "halt")
        self.risk("halt", True, f"halted: {self.halt_reason}")
        return OrderReply(cmd.key, True, "halted", self.halt_reason)

    def cmd_resume(self, cmd: OrderCommand) -> OrderReply:
        h = self.journal.get("halt") or {}
        if h.get("kind") == "daily_loss" and h.get("day") == self.day():
            return OrderReply(cmd.key, False, "refused", "daily loss halt holds until the next trading day")
        self.clear_halt()
        self.risk("halt", False, "resumed")
        return OrderReply(cmd.key, True, "resumed")
