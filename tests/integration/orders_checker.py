"""The invariant checker of the order gateway drills: reads the simulator's own state every
100 ms (its /sim/state, which no fault touches) and records every breach of the gateway's
promise, with when and how long:
- a position with no working stop (on the closing side, covering its size) for longer than
  `grace_s` beyond the broker's own answer time (`broker_s`, set by the drill);
- a working order while flat for longer than `flat_grace_s`;
- |position| above max_contracts, or a position that changed sign between two reads without
  the gateway having been told to reverse (an exit that flipped it);
- two broker orders sharing a customTag;
and, from a second thread, an operator `status` command that waits more than `answer_ms` (250 ms).

`check_keeper_pnl` compares the position keeper's realized P&L of the day (its `status` answer)
with the broker's own (the simulator's trades of the account: P&L minus fees), allowing the keeper
a short lag to see the last fill.
"""
from __future__ import annotations

import collections
import threading
import time

from common.bus import LazyPirateClient, ServiceUnavailable
from common.messages import OrderCommand

STOP_TYPES = {3, 4, 5}


class Checker:
    def __init__(self, sim, orders_cmd: str, max_contracts: int, grace_s: float = 1.0, flat_grace_s: float = 2.0,
                 answer_ms: float = 250.0):
        self.sim = sim
        self.answer_ms = answer_ms            # the longest an operator `status` may wait
        self.orders_cmd = orders_cmd
        self.max_contracts = max_contracts
        self.grace_s = grace_s
        self.flat_grace_s = flat_grace_s
        self.broker_s = 0.0                   # the broker's own answer time, added to the grace
        self.flat_broker_s: float | None = None   # the same for working-while-flat (default broker_s)
        self.violations: list[str] = []
        self.answers_ms: list[float] = []
        self.unprotected_s: list[float] = []  # every episode of a position with no working stop
        self.reads = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._watch, daemon=True),
                         threading.Thread(target=self._ask, daemon=True)]
        self.reversals_allowed = 0
        self.paused_asking = threading.Event()   # set while the gateway is deliberately down (kill -9)

    def __enter__(self) -> "Checker":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(5)

    def _watch(self) -> None:
        unprotected_since: float | None = None
        flat_working_since: float | None = None
        last_sign = 0
        while not self._stop.is_set():
            try:
                st = self.sim.state()
            except Exception:
                time.sleep(0.1)
                continue
            self.reads += 1
            now = time.monotonic()
            net = 0
            for p in st["positions"]:
                net += p["size"] if p["type"] == 1 else -p["size"]
            working = st["working"]
            if abs(net) > self.max_contracts:
                self.violations.append(f"|position| {abs(net)} > max_contracts {self.max_contracts}")
            sign = (net > 0) - (net < 0)
            if sign and last_sign and sign != last_sign:
                if self.reversals_allowed > 0:
                    self.reversals_allowed -= 1
                else:
                    self.violations.append(f"position flipped from {last_sign:+d} to {sign:+d} between two reads")
            last_sign = sign
            if net:
                close_side = 1 if net > 0 else 0
                stop = [o for o in working if o["type"] in STOP_TYPES and o["side"] == close_side
                        and o["size"] >= abs(net)]
                if stop:
                    if unprotected_since is not None:
                        self.unprotected_s.append(now - unprotected_since)
                    unprotected_since = None
                elif unprotected_since is None:
                    unprotected_since = now
                elif now - unprotected_since > self.grace_s + self.broker_s:
                    self.violations.append(f"{net:+d} open with no working stop for {now - unprotected_since:.1f} s "
                                           f"(allowed {self.grace_s + self.broker_s:.1f} s)")
                    unprotected_since = now          # one line per allowance, not one per read
                flat_working_since = None
            else:
                if unprotected_since is not None:
                    self.unprotected_s.append(now - unprotected_since)
                unprotected_since = None
                if working:
                    if flat_working_since is None:
                        flat_working_since = now
                    elif now - flat_working_since > self.flat_grace_s + (
                            self.broker_s if self.flat_broker_s is None else self.flat_broker_s):
                        self.violations.append(f"flat with {len(working)} working orders for "
                                               f"{now - flat_working_since:.1f} s: {[o['customTag'] for o in working]}")
                        flat_working_since = now
                else:
                    flat_working_since = None
            tags = collections.Counter(o.get("customTag") for o in st["orders"] if o.get("customTag"))
            dup = [t for t, n in tags.items() if n > 1]
            if dup:
                self.violations.append(f"customTag used twice: {dup}")
            time.sleep(0.1)

    def _ask(self) -> None:
        client = LazyPirateClient("checker", self.orders_cmd, timeout_ms=2000, retries=0)
        try:
            while not self._stop.is_set():
                t0 = time.perf_counter()
                try:
                    client.request(OrderCommand(f"chk-status-{time.time_ns()}", "status"))
                    ms = (time.perf_counter() - t0) * 1000
                except ServiceUnavailable:
                    ms = float("inf")
                    client.close()
                    client = LazyPirateClient("checker", self.orders_cmd, timeout_ms=2000, retries=0)
                if self.paused_asking.is_set():
                    time.sleep(0.3)
                    continue
                self.answers_ms.append(ms)
                if ms > self.answer_ms:
                    self.violations.append(f"status answered in {ms:.0f} ms (> {self.answer_ms:g})")
                time.sleep(0.3)
        finally:
            client.close()

    def check(self) -> None:
        assert self.reads > 10, f"the checker read the simulator only {self.reads} times"
        assert not self.violations, "\n".join(self.violations[:20])


def broker_realized_cents(sim_state: dict, account_id: int | None = None) -> int:
    """The broker's own realized P&L of the account: the P&L of its closing trades minus the fees
    (and commissions) of every trade, voided ones left out, as TopstepX reports them."""
    gross = fees = 0
    for t in sim_state["trades"]:
        if t.get("voided") or (account_id is not None and t.get("accountId") != account_id):
            continue
        if t.get("profitAndLoss") is not None:
            gross += round(t["profitAndLoss"] * 100)
        fees += round((t.get("fees") or 0) * 100) + round((t.get("commissions") or 0) * 100)
    return gross - fees


def keeper_realized_cents(positions_query: str) -> int | None:
    """What the position keeper answers for today's realized P&L (net of fees); None when it does
    not answer (down, restarting)."""
    from common.messages import Query
    client = LazyPirateClient("checker", positions_query, timeout_ms=1000, retries=0)
    try:
        rep = client.request(Query("status")).msg
    except ServiceUnavailable:
        return None
    finally:
        client.close()
    if not getattr(rep, "ok", False):
        return None
    return int(rep.data["account"]["realized_day_cents"])


def check_keeper_pnl(sim, positions_query: str, lag_s: float = 2.0, timeout_s: float | None = None) -> int:
    """The keeper's realized P&L of the day equals the broker's, once the keeper has had `lag_s`
    to see the last fill (a keeper just restarted by supervisord gets `timeout_s` to answer at
    all). Returns the agreed amount in cents; raises AssertionError with both amounts."""
    end = time.monotonic() + max(lag_s, timeout_s or 0.0)
    seen: list[tuple[int | None, int]] = []
    while True:
        broker = broker_realized_cents(sim.state(), getattr(sim, "account_id", None))
        keeper = keeper_realized_cents(positions_query)
        seen.append((keeper, broker))
        if keeper == broker:
            return broker
        if time.monotonic() > end:
            raise AssertionError(f"keeper realized P&L {keeper} cents != broker's {broker} cents "
                                 f"(net of fees) after {lag_s:g} s; last reads (keeper, broker): {seen[-5:]}")
        time.sleep(0.2)
