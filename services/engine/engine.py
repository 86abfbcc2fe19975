"""The engine core: messages in, signals / risk events / order commands out. No sockets.

`send(cmd, hops, on_sent)` returns the gateway's OrderReply, or None when it did not answer,
and calls `on_sent()` once the command is on the wire (the signal's publish and log lines run
there, off the tick-to-order path);
`publish(msg, key)` puts a Signal / RiskEvent on the bus. Both are injected, so the
whole decision path runs in unit tests on an EventClock.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

from loguru import logger

from common import broker_codes
from common.instruments import instrument_for
from common.messages import (
    Account, Bar, Heartbeat, OperatorCommand, OrderCommand, OrderEvent, OrderReply, Position,
    Prediction, Quote, Reply, RiskEvent, Signal,
)
from common.session import SessionCalendar
from services.engine import breakers
from services.engine import risk
from services.engine.config import EngineConfig
from services.engine.signals import ENTRIES, EXITS, REVERSALS, SignalParams, downgrade_reverse, generate, signal_id

NS = 1_000_000_000
REJECTED_STATUS = broker_codes.REJECTED
FAILED_ENTRY_STATUS = {broker_codes.CANCELLED, broker_codes.EXPIRED, broker_codes.REJECTED}
TRADING_PHASES = ("open", "no_new_entries")
IN_SESSION = ("open", "no_new_entries", "flatten")
MAX_EXIT_RESENDS = 3          # an exit or flatten lost by the gateway is sent again at most this often
CODE_DIRECTION = {"LE": 1, "SE": -1, "RL": 1, "RS": -1, "XL": 0, "XS": 0, "FL": 0}


@dataclass
class Pending:
    key: str
    kind: str
    target: int          # position direction expected once it is done
    sent_ns: int
    unknown: bool = False   # the gateway did not answer: ask its status before anything else
    cmd: OrderCommand | None = None   # what was sent (an exit or flatten may be sent again, same key)
    resends: int = 0


class Engine:
    def __init__(self, cfg, sect: EngineConfig, clock, send: Callable[[OrderCommand, dict], OrderReply | None],
                 publish: Callable[..., Any], session: SessionCalendar | None = None,
                 wall: Callable[[], int] | None = None):
        self.cfg = cfg
        self.sect = sect
        self.clock = clock
        self.send = send
        self.publish = publish
        self.contract = sect.contract or cfg.trading.contract
        self.inst = instrument_for(self.contract)
        self.session = session or SessionCalendar.from_config(cfg.trading)
        self.session.today(time.time_ns())      # load the exchange calendar now, not on the first decision
        self.sp = SignalParams(cfg.model.min_confidence, cfg.model.reverse_confidence, cfg.model.max_holding_s)
        self.rp = risk.RiskParams.from_config(cfg, sect.require_atr)
        self.breakers = breakers.Breakers(breakers.BreakerParams.from_risk(cfg.risk), sect.needed_services, wall=wall)
        self.rules = risk.RuleState()
        # state
        self.pos_dir = 0
        self.pos_size = 0
        self.pos_entry_ns = 0
        self.pos_unrealized = 0
        self.pos_stop_order: int | None = None
        self.position_known = False
        self.account: Account | None = None
        self.pending: Pending | None = None
        self.synced = False                   # the gateway's status was read since start
        self.need_status = True
        self.gateway_stale = ""               # why the last known gateway status is stale ("" = fresh)
        self.day_halt: dict[str, str] = {}    # trading day -> reason (daily loss, trailing drawdown)
        self.eod_day = ""                     # trading day the end-of-day flatten was sent
        self.last_flatten_ns = 0
        self.mismatch_flattened = False
        self.gateway_halt = ""                # the order gateway's own halt (operator or its daily-loss guard)
        self.spread_ticks: int | None = None
        self.last_bar_ns = 0
        self.last_pred: Prediction | None = None
        self.model_version = ""
        self.seen_rejects: set[Any] = set()
        self._last_log: dict[str, tuple[int, str]] = {}
        self.counts = {"predictions": 0, "signals": 0, "commands": 0, "blocked": 0, "skipped_pending": 0,
                       "rejects": 0, "unanswered": 0}
        self.latency_us = {"last": 0.0, "max": 0.0}

    # ------------------------------------------------------------------ helpers
    def now(self) -> int:
        return self.clock.now_ns()

    def _risk(self, events: list[RiskEvent]) -> None:
        for ev in events:
            level = "INFO" if not ev.active else ev.severity
            logger.log(level, f"RISK: {ev.kind} {'TRIPPED' if ev.active else 'CLEARED'}: {ev.detail}")
            self.publish(ev, key=ev.kind)

    def _block(self, reasons: dict[str, str]) -> None:
        """Entry blocked: one logged risk event per reason, repeated identical ones rate-limited."""
        self.counts["blocked"] += 1
        now = self.now()
        for kind, detail in reasons.items():
            last = self._last_log.get(kind)
            if last is not None and now - last[0] < self.sect.log_repeat_s * NS:
                continue
            self._last_log[kind] = (now, detail)
            logger.warning(f"RISK: entry blocked ({kind}): {detail}")
            self.publish(RiskEvent(f"entry_blocked:{kind}", True, "WARNING", detail))

    def day_pnl(self) -> int:
        if self.account is None:
            return 0
        return self.account.realized_day_cents + self.unrealized()

    def unrealized(self) -> int:
        if self.pos_dir != 0:
            return self.pos_unrealized
        return self.account.unrealized_cents if self.account is not None else 0

    def trading_day(self) -> str:
        return self.session.trading_day(self.now())

    def exposure(self) -> bool:
        return self.pos_dir != 0 or (self.pending is not None and self.pending.target != 0)

    def entry_blocks(self) -> dict[str, str]:
        """Everything that forbids a new position right now (not counting the prediction gates)."""
        out: dict[str, str] = {}
        now = self.now()
        if not self.session.entries_allowed(now):
            out["session"] = f"no new entries in phase {self.session.phase(now)}"
        for name in self.breakers.names():
            out[f"breaker_{name}"] = self.breakers.active[name]
        for k, d in self.rules.active.items():
            out[k] = d
        halted = self.day_halt.get(self.trading_day())
        if halted:
            out["day_halt"] = halted
        if self.pending is not None:
            out["in_flight"] = f"{self.pending.kind} {self.pending.key} not confirmed yet"
        if self.gateway_halt:
            out["gateway_halt"] = self.gateway_halt
        if not self.synced:
            out["gateway_status_unknown"] = "the gateway's status has not been read since start"
        if self.gateway_stale:
            out["gateway_stale"] = self.gateway_stale
        return out

    # ------------------------------------------------------------------ inputs
    def on_quote(self, q: Quote) -> None:
        if q.contract != self.contract:
            return
        if q.bid_ticks > 0 and q.ask_ticks > 0:
            self.spread_ticks = q.ask_ticks - q.bid_ticks
        self._risk(self.breakers.on_quote(self.now(), q.bid_ticks, q.ask_ticks, q.last_ticks))

    def on_feed_status(self, state: str, detail: str = "") -> None:
        """The feed says it lost the market: stale data now, not 5 s later; a fresh quote clears it."""
        if state in ("stale", "down", "reconnecting") and self.session.phase(self.now()) in IN_SESSION:
            self._risk(self.breakers.feed_lost(f"feed {state}: {detail}".rstrip(": ")))

    def on_bar(self, bar: Bar) -> None:
        if bar.contract == self.contract and bar.interval_s == 1:
            self._risk(self.breakers.on_second_bar(self.now(), bar.high_ticks, bar.low_ticks))

    def on_heartbeat(self, hb: Heartbeat, src: str = "") -> None:
        self._risk(self.breakers.on_heartbeat(self.now(), hb.service or src))

    def on_position(self, pos: Position) -> None:
        if pos.contract != self.contract:
            return
        was = self.pos_dir
        self.position_known = True
        self.pos_dir = pos.direction if pos.size else 0
        self.pos_size = pos.size if pos.direction else 0
        self.pos_unrealized = pos.unrealized_cents if self.pos_dir else 0
        self.pos_stop_order = pos.stop_order_id
        if self.pos_dir != 0:
            self.pos_entry_ns = pos.entry_ns or (self.pos_entry_ns if was == self.pos_dir else self.now())
        else:
            self.pos_entry_ns = 0
        if self.pending is not None and self.pos_dir == self.pending.target:
            logger.debug(f"ENGINE: {self.pending.kind} {self.pending.key} done: position {self.pos_dir:+d} x{self.pos_size}")
            self.pending = None
        self.evaluate_account()

    def on_account(self, acct: Account) -> None:
        self.account = acct
        self.evaluate_account()

    def on_risk_event(self, ev: RiskEvent, src: str = "") -> None:
        if src == "orders" and ev.kind in ("halt", "daily_loss"):
            # mirror the gateway's halt: entries it would refuse are not sent at all
            if ev.active:
                self.gateway_halt = ev.detail or ev.kind
            elif ev.kind == "halt":
                self.gateway_halt = ""
            logger.info(f"ENGINE: order gateway {'halted: ' + self.gateway_halt if self.gateway_halt else 'resumed'}")
            return
        if src == "supervision" and ev.kind == breakers.CRASH_LOOP:
            self._risk(self.breakers.on_crash_loop(ev.active, ev.detail))
            return
        if ev.kind == breakers.POSITION_MISMATCH:
            self._risk(self.breakers.on_mismatch(ev.active, ev.detail))
            if not ev.active:
                self.mismatch_flattened = False
            elif self.pos_dir != 0 and self.pos_stop_order is None and not self.mismatch_flattened:
                self.mismatch_flattened = True
                self.flatten("position mismatch: broker position without a working stop")

    def on_order_event(self, ev: OrderEvent, snapshot: bool = False) -> None:
        if ev.status == REJECTED_STATUS and ("oe", ev.order_id) not in self.seen_rejects:
            self.seen_rejects.add(("oe", ev.order_id))
            if not snapshot:
                self.counts["rejects"] += 1
                self._risk(self.breakers.on_reject(self.now(), f"order {ev.order_id} {ev.leg} rejected"))
        p = self.pending
        if p is not None and ev.leg == "entry" and ev.intent_key == p.key and ev.status in FAILED_ENTRY_STATUS:
            logger.warning(f"ENGINE: entry {p.key} ended without a fill (status {ev.status}); exposure cleared")
            self.pending = None

    def on_reply(self, reply: OrderReply) -> None:
        if reply.status == "halted":
            self.gateway_halt = reply.message or "order gateway halted"
        if reply.status in ("rejected", "error"):
            oid = reply.detail.get("order_id")
            if oid is not None:
                if ("oe", oid) in self.seen_rejects:
                    return
                self.seen_rejects.add(("oe", oid))      # its OrderEvent (status 5) is the same reject
            self.counts["rejects"] += 1
            self._risk(self.breakers.on_reject(self.now(), f"{reply.key} {reply.status}: {reply.message}"))

    # ------------------------------------------------------------------ predictions
    def on_prediction(self, pred: Prediction, hops: dict | None = None, snapshot: bool = False) -> None:
        if pred.contract != self.contract:
            return
        if pred.atr_ticks > 0:
            self.breakers.atr_ticks = pred.atr_ticks
        if snapshot or pred.bar_start_ns <= self.last_bar_ns:
            return        # a retained prediction re-delivered (restart, resync): never act on it twice
        t0 = time.perf_counter()
        self.last_bar_ns = pred.bar_start_ns
        self.last_pred = pred
        self.model_version = pred.model_version
        self.counts["predictions"] += 1
        now = self.now()
        if self.pending is not None:
            self.counts["skipped_pending"] += 1
            return
        holding = (now - self.pos_entry_ns) / NS if self.pos_dir and self.pos_entry_ns else 0.0
        got = generate(pred.direction, pred.confidence, self.pos_dir, holding, self.sp,
                       self.session.phase(now) in TRADING_PHASES)
        if got is None:
            return
        kind, reason = got
        plan = None
        if kind in ENTRIES or kind in REVERSALS:
            blocks = self.entry_blocks()
            blocks.pop("in_flight", None)
            blocks.update(risk.prediction_gates(self.rp, pred, now, self.sect.bar_interval_s))
            spread = self.spread_ticks if self.spread_ticks is not None else pred.spread_ticks
            blocks.update(risk.spread_gate(self.rp, spread))
            if not blocks:
                balance = self.account.balance_cents if self.account else self.rp.starting_capital_cents
                plan = risk.plan_entry(self.rp, self.inst, pred.atr_ticks, balance, self.day_pnl())
                if plan.size <= 0:
                    blocks[risk.SIZE_ZERO] = (f"size 0 for a {plan.stop_ticks}-tick stop on balance "
                                           f"{balance / 100:.2f}: trade skipped")
            if blocks:
                self._block(blocks)
                if kind in ENTRIES:
                    return
                kind, reason, plan = downgrade_reverse(kind), "reversal blocked: " + ",".join(blocks), None
        self.act(kind, signal_id(kind, pred.bar_start_ns), pred, reason, plan, hops)
        us = (time.perf_counter() - t0) * 1e6
        self.latency_us["last"] = round(us, 1)
        self.latency_us["max"] = max(self.latency_us["max"], round(us, 1))

    # ------------------------------------------------------------------ acting
    def act(self, kind: str, key: str, pred: Prediction | None, reason: str, plan: risk.EntryPlan | None = None,
            hops: dict | None = None) -> OrderReply | None:
        conf = pred.confidence if pred else 1.0
        price = pred.close_ticks if pred else (self.last_pred.close_ticks if self.last_pred else 0)
        version = pred.model_version if pred else self.model_version
        self.counts["signals"] += 1

        def announce() -> None:
            """The signal on the bus and in the log: run once its command is on the wire (the
            publish and two log lines cost ~0.3 ms at one bar a second), before its answer."""
            self.publish(Signal(key, kind, self.contract, conf, price, version, reason), key="signal")
            logger.info(f"SIGNAL: {kind} conf={conf:.2f} price={self.inst.fmt(price)}")
            logger.info(f"ENGINE: {key} {kind}: {reason}"
                        + (f"; size {plan.size}, stop {plan.stop_ticks} ticks, target {plan.target_ticks} ticks, "
                           f"risk {plan.risk_cents / 100:.2f} USD" if plan else ""))
        if kind in ENTRIES or kind in REVERSALS:
            d = 1 if kind in ("LONG_ENTRY", "REVERSE_TO_LONG") else -1
            cmd = OrderCommand(key, "enter" if kind in ENTRIES else "reverse", self.contract, d, plan.size,
                               plan.stop_ticks, plan.target_ticks, key, version, reason)
            target = d
        elif kind in EXITS:
            cmd = OrderCommand(key, "exit", self.contract, 0, 0, 0, 0, key, version, reason)
            target = 0
        else:
            cmd = OrderCommand(key, "flatten", self.contract, 0, 0, 0, 0, key, version, reason)
            target = 0
        return self._send(cmd, kind, target, hops, announce)

    def _send(self, cmd: OrderCommand, kind: str, target: int, hops: dict | None = None,
              announce: Callable[[], None] | None = None) -> OrderReply | None:
        said = False

        def say() -> None:
            nonlocal said
            if announce is not None and not said:
                said = True
                announce()
        if cmd.action in ("enter", "reverse") and (self.gateway_stale or not self.synced):
            say()
            # the last line: never an entry against a gateway view that is not fresh
            self.counts["blocked"] += 1
            logger.error(f"ENGINE: {cmd.action} {cmd.key} not sent: the gateway's status is "
                         f"{self.gateway_stale or 'unknown'}")
            return None
        self.counts["commands"] += 1
        hops = dict(hops or {})
        hops["engine"] = time.time_ns()
        reply = self.send(cmd, hops, say)
        say()                                  # a gateway that was never reached
        now = self.now()
        if reply is None:
            self.counts["unanswered"] += 1
            logger.error(f"ENGINE: the order gateway did not answer {cmd.action} {cmd.key}; "
                         "no new entry until its status is read")
            self.pending = Pending(cmd.key, kind, target, now, unknown=True, cmd=cmd)
            self.gateway_unanswered(f"no answer to {cmd.action} {cmd.key}")
            return None
        self.on_reply(reply)
        if reply.ok and reply.status == "accepted":
            logger.info(f"ENGINE: {cmd.action} {cmd.key} accepted"
                        f"{'; the outcome follows on the bus' if reply.detail.get('pending') else ''}")
            if target != self.pos_dir or cmd.action in ("enter", "reverse"):
                self.pending = Pending(cmd.key, kind, target, now, cmd=cmd)
        elif reply.ok and reply.status == "flat":
            logger.info(f"ENGINE: {cmd.action} {cmd.key}: flat {reply.message}".rstrip())
        elif reply.ok and cmd.action == "reverse":
            # the exit leg went out, the entry leg did not (refused, halted): expect flat
            logger.warning(f"ENGINE: reverse {cmd.key} -> {reply.status}: {reply.message}")
            self.pending = Pending(cmd.key, "EXIT", 0, now)
        elif reply.detail.get("in_flight"):
            # the gateway does not know whether the broker took it: exposure until its status says
            logger.error(f"ENGINE: {cmd.action} {cmd.key} outcome unknown at the gateway: {reply.message}")
            self.pending = Pending(cmd.key, kind, target, now, unknown=True, cmd=cmd)
            self.need_status = True
        elif reply.ok:
            logger.info(f"ENGINE: {cmd.action} {cmd.key} -> {reply.status} {reply.message}".rstrip())
        else:
            logger.warning(f"ENGINE: {cmd.action} {cmd.key} -> {reply.status}: {reply.message}")
        return reply

    def on_command_outcome(self, reply: OrderReply) -> None:
        """The gateway answered a command `accepted` before its outcome was known; the outcome
        comes on the bus. A command that did not go through clears what it was waited for."""
        logger.info(f"ENGINE: outcome of {reply.key}: {reply.status} {reply.message}".rstrip())
        self.on_reply(reply)
        p = self.pending
        if p is None or p.key != reply.key or reply.ok:
            return
        if reply.detail.get("in_flight"):
            p.unknown = True
            self.need_status = True
        else:
            logger.warning(f"ENGINE: {reply.key} did not go through ({reply.status}); no longer pending")
            self.pending = None

    def flatten(self, reason: str, key: str | None = None) -> OrderReply | None:
        now = self.now()
        self.last_flatten_ns = now
        return self.act("FLATTEN", key or f"FL{now // NS}", None, reason)

    # ------------------------------------------------------------------ account rules
    def evaluate_account(self) -> None:
        verdict = risk.account_rules(self.rp, self.account, self.unrealized())
        self._risk(self.rules.update(verdict.blocks))
        if verdict.flatten is not None:
            day = self.trading_day()
            if day not in self.day_halt:
                rule, detail = verdict.flatten
                self.day_halt[day] = f"{rule}: {detail}"
                logger.error(f"RISK: {rule}: {detail}; flattening and halting entries for {day}")
                self.publish(RiskEvent("day_halt", True, "ERROR", f"{rule}: {detail}"), key="day_halt")
                self.flatten(rule)

    # ------------------------------------------------------------------ time
    def tick(self) -> None:
        now = self.now()
        if now <= 0:
            return
        phase = self.session.phase(now)
        self._risk(self.breakers.check(now, phase in IN_SESSION))
        # a new trading day clears the day halt (by construction: keyed by day)
        day = self.trading_day()
        if phase == "flatten" and self.eod_day != day:
            self.eod_day = day
            flat_ns = self.session.today(now).flatten_ns
            logger.warning(f"RISK: end of day: flatten time reached ({phase}); flattening")
            self.publish(RiskEvent("end_of_day", True, "WARNING", f"flatten time {day}"), key="end_of_day")
            self.flatten("end of day", key=f"FL{flat_ns // NS}")
        elif (self.session.must_be_flat(now) and self.pos_dir != 0 and self.pending is None
              and now - self.last_flatten_ns >= self.sect.flatten_retry_s * NS):
            self.flatten("still holding a position after the flatten time")
        # max holding time even without predictions
        if (self.pos_dir != 0 and self.pending is None and self.pos_entry_ns
                and (now - self.pos_entry_ns) / NS > self.sp.max_holding_s and phase in TRADING_PHASES):
            kind = "EXIT_LONG" if self.pos_dir > 0 else "EXIT_SHORT"
            self.act(kind, signal_id(kind, now), None, f"max holding {self.sp.max_holding_s:g} s")
        # the gateway's heartbeats stopped: what the engine knows of it is stale before any
        # command has to find out the slow way (a blocking request to a dead socket)
        seen = self.breakers.last_seen.get("orders")
        if seen is not None and not self.gateway_stale:
            wall_now = self.breakers.wall() if self.breakers.wall is not None else now
            if wall_now - seen > self.sect.gateway_silent_s * NS:
                self.gateway_unanswered(f"no heartbeat from the order gateway for {(wall_now - seen) / NS:.1f} s")
        # the account rules again (a new day, an unrealized swing)
        self.evaluate_account()
        if self.pending is not None and (self.pending.unknown
                                         or now - self.pending.sent_ns > self.sect.pending_timeout_s * NS):
            self.need_status = True

    def gateway_unanswered(self, why: str) -> None:
        """The gateway did not answer (a status question or a command): what the engine knows of
        it is stale until a status answer comes. No entry goes out meanwhile; its status is asked
        again (without blocking the loop: __main__ asks on its own socket)."""
        if not self.gateway_stale:
            # before the first status answer (the engine starting before the gateway) it is no news
            logger.log("WARNING" if self.synced else "DEBUG",
                       f"ENGINE: the order gateway's status is stale ({why}); no entry until it answers")
        self.gateway_stale = f"gateway status stale: {why}"
        self.need_status = True

    def sync_status(self, detail: dict) -> None:
        """The gateway's `status` reply: what is in flight and what it holds."""
        in_flight = [k for k in detail.get("in_flight", []) if isinstance(k, str)]
        pos = detail.get("position")
        if pos and not self.position_known and pos.get("contract", self.contract) == self.contract:
            self.pos_dir = int(pos.get("direction", 0)) if pos.get("size") else 0
            self.pos_size = int(pos.get("size", 0))
            self.pos_entry_ns = self.now() if self.pos_dir else 0
        lost: Pending | None = None
        if self.pending is not None and self.pending.key in in_flight:
            self.pending.sent_ns = self.now()
            self.pending.unknown = False
        elif self.pending is not None:
            gw_dir = int(pos.get("direction", 0)) if pos and pos.get("size") else 0
            p = self.pending
            logger.info(f"ENGINE: {p.key} no longer in flight at the gateway "
                        f"(its position {gw_dir:+d}); exposure from positions only")
            self.pending = None
            if (p.cmd is not None and p.cmd.action in ("exit", "flatten") and self.pos_dir != 0
                    and p.resends < MAX_EXIT_RESENDS):
                lost = p
        for k in in_flight:
            d = CODE_DIRECTION.get(k[:2])
            if self.pending is None and d is not None and d != 0:
                self.pending = Pending(k, "in_flight", d, self.now())
                logger.warning(f"ENGINE: entry {k} is in flight at the gateway; no new entry until it settles")
        self.gateway_halt = (detail.get("halt_reason") or "order gateway halted") if detail.get("halted") else ""
        if not self.synced or self.gateway_stale:
            logger.info(f"ENGINE: gateway status read: in flight {in_flight}, position {pos}, "
                        f"halted {detail.get('halted')}")
        self.gateway_stale = ""
        self.synced = True
        self.need_status = False
        if lost is not None and self.pending is None:
            # an exit the gateway took, then lost (a restart cut it off before its outcome: the
            # restarted gateway forgets a key it never answered finally). The same key again: a
            # gateway that still has it answers its first answer; one that lost it runs it,
            # checking the broker first, so the position is never closed twice
            logger.warning(f"ENGINE: {lost.key} {lost.cmd.action} not done and the position is still open "
                           f"({self.pos_dir:+d}); sending it again (same key)")
            self._send(lost.cmd, lost.kind, 0)
            if self.pending is not None and self.pending.key == lost.key:
                self.pending.resends = lost.resends + 1

    # ------------------------------------------------------------------ operator
    def operator(self, cmd: OperatorCommand) -> Reply:
        a = cmd.action
        if a == "halt":
            self._risk(self.breakers.halt(cmd.reason))
        elif a == "resume":
            self._risk(self.breakers.resume(cmd.reason))
        elif a == "flatten":
            reply = self.flatten(cmd.reason or "operator flatten", key=cmd.key or f"op-flatten-{time.time_ns()}")
            if reply is None or not reply.ok:
                return Reply(False, f"flatten: {reply.status if reply else 'gateway did not answer'}",
                             self.status())
        elif a != "status":
            return Reply(False, f"unknown action {a!r}; expected halt, resume, flatten or status", self.status())
        return Reply(True, a, self.status())

    def status(self) -> dict:
        return {
            "breakers": self.breakers.names(),
            "halted": breakers.MANUAL_HALT in self.breakers.active,
            "day_halt": self.day_halt.get(self.trading_day(), ""),
            "rules": sorted(self.rules.active),
            "position": {"contract": self.contract, "direction": self.pos_dir, "size": self.pos_size}
            if self.pos_dir else None,
            "pending": {"key": self.pending.key, "kind": self.pending.kind} if self.pending else None,
            "synced": self.synced,
            "gateway_stale": self.gateway_stale,
            "gateway_halt": self.gateway_halt,
            "phase": self.session.phase(self.now()) if self.now() > 0 else "unknown",
        }

    def stats(self) -> dict:
        return {**self.counts, "breakers": self.breakers.names(), "rules": sorted(self.rules.active),
                "signal_latency_us": dict(self.latency_us), "position": self.pos_dir,
                "pending": self.pending.key if self.pending else "", "gateway_stale": bool(self.gateway_stale)}
