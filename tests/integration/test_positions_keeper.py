"""Position keeper as a real process against the TopstepX simulator (no order gateway, no fakes).

Broker positions are created through the simulator's REST API, so the keeper only learns about
them by reconciliation: the missing position is adopted, a RiskEvent is published, the query
socket answers it; closing it makes a round trip; kill -9 and a restart keep the day's stats.
"""
from __future__ import annotations

import csv
import subprocess
import sys

import pytest

from common.bus import LazyPirateClient, Subscriber
from common.config import load_config
from common.messages import Account, Position, Query, RiskEvent, RoundTrip
from tests.harness.config import write_config
from tests.harness.procs import ROOT, ServiceProcess, wait_for
from tests.harness.sim import SimProcess

pytestmark = pytest.mark.integration

# the keeper is the only REST client here and reconciles every half second: it gets the whole
# budget (live, it shares it with the order gateway: positions.rate_share)
ALONE = {"rate_share": 1.0}


def ask(cfg, what: str) -> dict | None:
    client = LazyPirateClient("test", cfg.bus.positions_query, timeout_ms=1000, retries=0)
    try:
        rep = client.request(Query(what)).msg
    except Exception:
        return None
    finally:
        client.close()
    assert rep.ok, rep.message
    return rep.data


def place(sim: SimProcess, side: int, size: int, tag: str) -> int:
    r = sim.api("/api/Order/place", {"accountId": sim.account_id, "contractId": sim.contract_id,
                                     "type": 2, "side": side, "size": size, "customTag": tag})
    assert r["success"], r
    return r["orderId"]


def keeper_alone(tmp_path, sim: SimProcess, **positions):
    """A keeper process alone with the broker (the whole REST budget), once its first reconcile
    has started; returns (config, process)."""
    path = write_config(tmp_path, sim, positions={**positions, **ALONE})
    keeper = ServiceProcess("positions", path).start()
    try:
        wait_for(lambda: "RECONCILE: start" in keeper.output(), timeout=20, what="start reconcile")
    except BaseException:
        keeper.terminate(5)
        raise
    return load_config(path), keeper


def broker_net_cents(sim: SimProcess) -> int:
    trades = sim.state()["trades"] if "trades" in sim.state() else sim.state()["fills"]
    gross = sum(round(t["profitAndLoss"] * 100) for t in trades if t.get("profitAndLoss") is not None)
    fees = sum(round(t["fees"] * 100) for t in trades)
    return gross - fees


@pytest.fixture
def sim(tmp_path):
    with SimProcess(tmp_path / "sim") as s:
        yield s


def test_keeper_discovers_broker_positions_and_survives_kill9(tmp_path, sim):
    path = write_config(tmp_path, sim, positions={"reconcile_s": 0.5, "recheck_s": 0.3, **ALONE})
    cfg = load_config(path)
    keeper = ServiceProcess("positions", path).start()
    sub = Subscriber("test", cfg.bus.positions_pub, cfg.bus.positions_snap,
                     topics=[Position, Account, RiskEvent, RoundTrip])
    seen: list = []

    def collect():
        seen.extend(e.msg for e in sub.drain())
        return seen
    try:
        first = wait_for(lambda: ask(cfg, "status"), timeout=20, what="keeper answers status")
        wait_for(lambda: any(isinstance(m, Account) for m in collect()), timeout=5, what="Account snapshot")
        assert first["position"]["size"] == 0
        wait_for(lambda: "RECONCILE: start" in keeper.output(), timeout=15, what="start reconcile")

        # a position opened behind the keeper's back (no gateway, no fill on the bus)
        place(sim, 0, 2, "LE1763910000:entry:0")
        st = wait_for(lambda: collect() and (d := ask(cfg, "status")) and d["position"]["size"] == 2 and d,
                      timeout=15, what="keeper adopts the broker's long 2")
        assert st["position"]["direction"] == 1
        assert st["position"]["signal_id"] == "LE1763910000"
        broker_pos = sim.api("/api/Position/searchOpen", {"accountId": sim.account_id})["positions"]
        assert [(p["type"], p["size"]) for p in broker_pos] == [(1, 2)]
        wait_for(lambda: any(isinstance(m, RiskEvent) and m.kind == "position_mismatch" and m.active
                             for m in collect()), timeout=20, what="position_mismatch RiskEvent active")
        assert "ALERT: position mismatch" in keeper.output()
        wait_for(lambda: any(isinstance(m, RiskEvent) and m.kind == "position_mismatch" and not m.active
                             for m in collect()), timeout=10, what="position_mismatch cleared")
        assert st["account"]["fees_day_cents"] == 2 * 37

        # closed at the broker: a round trip with the exit reason from the closing order's tag
        place(sim, 1, 2, "XL1763910060:exit:0")
        st = wait_for(lambda: (d := ask(cfg, "status")) and d["position"]["size"] == 0
                      and d["account"]["trades_today"] == 1 and d, timeout=15, what="flat, one round trip")
        trades = ask(cfg, "trades")["trades"]
        assert len(trades) == 1
        rt = trades[0]
        assert rt["exit_reason"] == "signal" and rt["size"] == 2 and rt["direction"] == 1
        assert rt["fees_cents"] == 4 * 37
        assert rt["pnl_cents"] == broker_net_cents(sim) == st["account"]["realized_day_cents"]
        balance = round(sim.state()["account"]["balance"] * 100)
        assert st["account"]["balance_cents"] == balance
        wait_for(lambda: any(isinstance(m, RoundTrip) for m in collect()), timeout=5, what="RoundTrip published")
        day = st["account"]["trading_day"]
        rows = list(csv.DictReader(open(tmp_path / "logs" / f"trades_{day}.csv")))
        assert len(rows) == 1 and rows[0]["exit_reason"] == "signal"
        assert round(float(rows[0]["pnl_usd"]) * 100) == rt["pnl_cents"]
        assert "TRADE CLOSED: " in keeper.output()

        # kill -9, a second losing round trip while it is down, restart: the day survives
        keeper.kill9()
        place(sim, 1, 1, "SE1763910120:entry:0")
        place(sim, 0, 1, "op-flatten-1:flatten:0")
        keeper.start()
        st = wait_for(lambda: (d := ask(cfg, "status")) and d["account"]["trades_today"] == 2 and d,
                      timeout=20, what="restarted keeper: two round trips")
        assert st["account"]["realized_day_cents"] == broker_net_cents(sim)
        trades = ask(cfg, "trades")["trades"]
        assert [t["exit_reason"] for t in trades] == ["signal", "flatten"]
        assert trades[0] == rt
        assert "STATE: restored" in keeper.output()

        # SIGTERM: exit 0, report written
        assert keeper.terminate() == 0
        assert (tmp_path / "logs" / f"report_{day}.html").exists()
        assert (tmp_path / "logs" / "state" / "positions.json").exists()
    finally:
        sub.close()
        keeper.terminate(5)


def test_bad_config_exits_2_with_one_line(tmp_path):
    path = write_config(tmp_path, positions={"reconcile_s": -1})
    r = subprocess.run([sys.executable, "-m", "services.positions", "--config", str(path)], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "positions.reconcile_s" in lines[0]


def test_fills_from_the_bus_with_quotes_and_broker_agreeing(tmp_path, sim):
    """The test plays the order gateway's and the feed's publishers (the gateway is built elsewhere):
    the broker's own trades are published as Fills; the keeper builds the position from them, marks
    it with the quotes, and the reconciliation finds the broker in step (no alert, no double count)."""
    import threading

    from common.bus import Publisher, ServiceLoop
    from common.instruments import instrument_for
    from common.messages import Fill, OrderEvent, Quote
    from common.topstepx.rest import parse_time

    path = write_config(tmp_path, sim, positions={"reconcile_s": 0.5, "recheck_s": 1.0, **ALONE})
    cfg = load_config(path)
    loop = ServiceLoop("test-pubs")
    orders = Publisher("orders", cfg.bus.orders_pub, cfg.bus.orders_snap).attach(loop)
    feed = Publisher("feed", cfg.bus.feed_pub, cfg.bus.feed_snap).attach(loop)
    th = threading.Thread(target=loop.run, daemon=True)
    th.start()
    inst = instrument_for(sim.contract_id)

    def publish(pub, msg, key=None):
        loop.call_soon_threadsafe(lambda: pub.publish(msg, key=key))

    def gateway_fills(order_id: int, leg: str, signal_id: str) -> list[Fill]:
        rows = [t for t in sim.state()["trades"] if t["orderId"] == order_id]
        return [Fill(t["id"], order_id, sim.contract_id, leg, t["side"], t["size"], inst.to_ticks(str(t["price"])),
                     round(t["fees"] * 100), None if t["profitAndLoss"] is None else round(t["profitAndLoss"] * 100),
                     parse_time(t["creationTimestamp"]), signal_id, signal_id, "v-test") for t in rows]

    keeper = ServiceProcess("positions", path).start()
    try:
        wait_for(lambda: "RECONCILE: start" in keeper.output(), timeout=20, what="start reconcile")
        oid = place(sim, 1, 1, "SE1763911000:entry:0")
        [entry] = wait_for(lambda: gateway_fills(oid, "entry", "SE1763911000"), timeout=5, what="sim fill")
        publish(orders, entry, key=str(entry.trade_id))
        r = sim.api("/api/Order/place", {"accountId": sim.account_id, "contractId": sim.contract_id, "type": 4,
                                         "side": 0, "size": 1, "stopPrice": float(inst.to_price(entry.price_ticks + 8)),
                                         "customTag": "SE1763911000:stop:0"})
        stop_id = r["orderId"]
        publish(orders, OrderEvent(stop_id, "SE1763911000:stop:0", sim.contract_id, "stop", 0, 4, 1, 1,
                                   stop_ticks=entry.price_ticks + 8), key=str(stop_id))
        publish(feed, Quote(sim.contract_id, entry.price_ticks - 3, entry.price_ticks - 2, entry.price_ticks - 2,
                            entry.exch_ns + 1, entry.exch_ns + 1), key=sim.contract_id)
        st = wait_for(lambda: (d := ask(cfg, "status")) and d["position"]["size"] == 1
                      and d["position"]["unrealized_cents"] and d, timeout=10, what="short from the bus fill")
        pos = st["position"]
        assert pos["direction"] == -1 and pos["model_version"] == "v-test"
        assert pos["stop_ticks"] == entry.price_ticks + 8 and pos["stop_order_id"] == stop_id
        # the stop is cancelled at the broker and no event says so: the reconciliation notices
        assert sim.api("/api/Order/cancel", {"accountId": sim.account_id, "orderId": stop_id})["success"]
        wait_for(lambda: ask(cfg, "status")["position"]["stop_order_id"] is None, timeout=10,
                 what="stale stop order cleared")
        assert pos["avg_price"] == f"{inst.to_price(entry.price_ticks):.2f}"
        assert pos["unrealized_cents"] == 2 * 125          # a short marks at the ask, 2 ticks in its favour
        assert st["account"]["unrealized_cents"] == 250

        oid2 = place(sim, 0, 1, "SE1763911000:target:0")
        [exit_] = wait_for(lambda: gateway_fills(oid2, "target", ""), timeout=5, what="sim exit fill")
        publish(orders, exit_, key=str(exit_.trade_id))
        st = wait_for(lambda: (d := ask(cfg, "status")) and d["account"]["trades_today"] == 1 and d,
                      timeout=10, what="round trip from bus fills")
        [rt] = ask(cfg, "trades")["trades"]
        assert rt["exit_reason"] == "target" and rt["signal_id"] == "SE1763911000" and rt["model_version"] == "v-test"
        assert rt["pnl_cents"] == broker_net_cents(sim) == st["account"]["realized_day_cents"]
        assert rt["ticks"] == entry.price_ticks - exit_.price_ticks
        import time
        time.sleep(1.5)                                     # a few reconciliations with the broker in step
        st = ask(cfg, "status")
        assert st["account"]["trades_today"] == 1 and st["account"]["realized_day_cents"] == rt["pnl_cents"]
        assert "ALERT: position mismatch" not in keeper.output()
        assert st["reconcile"]["checks"] >= 2 and not st["reconcile"]["mismatch_active"]
        assert f"TRADE CLOSED: " in keeper.output()

        # the gateway restarts (new publisher epoch): the keeper resyncs and asks the broker at once
        def restart_gateway():
            loop.remove_reader(orders.snap)
            orders.close()
            holder.append(Publisher("orders", cfg.bus.orders_pub, cfg.bus.orders_snap).attach(loop))
        holder: list = []
        loop.call_soon_threadsafe(restart_gateway)
        new_orders = wait_for(lambda: holder and holder[0], timeout=5, what="gateway publisher restarted")
        time.sleep(0.3)                                     # let the keeper's SUB socket reconnect
        publish(new_orders, entry, key=str(entry.trade_id))   # its day's fills, retained again
        wait_for(lambda: "RECONCILE: order gateway resynced" in keeper.output(), timeout=10,
                 what="reconcile after the gateway's restart")
        st = ask(cfg, "status")
        assert st["account"]["trades_today"] == 1 and st["position"]["size"] == 0   # the repeated fill is a duplicate
    finally:
        keeper.terminate(5)
        loop.call_soon_threadsafe(lambda: loop.stop("test over"))
        th.join(5)
        for p in [orders, feed, *locals().get("holder", [])]:
            p.close()


def test_reversal_and_partial_fills_at_the_broker(tmp_path, sim):
    """A reversal through zero and a partially filled order, both done at the broker: the keeper
    reconstructs the round trips from Trade/search and agrees with the broker to the cent."""
    cfg, keeper = keeper_alone(tmp_path, sim, reconcile_s=0.4, recheck_s=0.2)
    try:
        place(sim, 0, 1, "LE1763912000:entry:0")
        wait_for(lambda: (d := ask(cfg, "status")) and d["position"]["direction"] == 1, timeout=10, what="long 1")
        place(sim, 1, 2, "RS1763912060:exit:0")           # long 1 -> short 1 in one order
        st = wait_for(lambda: (d := ask(cfg, "status")) and d["position"]["direction"] == -1
                      and d["account"]["trades_today"] == 1 and d, timeout=10, what="reversed to short 1")
        assert st["position"]["size"] == 1
        sim.control("partial_fill", fill=1)                # the cover fills 1 now, 1 on the next market update
        place(sim, 0, 2, "LE1763912120:entry:0")           # short 1 -> long 1 again
        st = wait_for(lambda: (d := ask(cfg, "status")) and d["position"]["direction"] == 1
                      and d["account"]["trades_today"] == 2 and d, timeout=15, what="reversed to long 1")
        place(sim, 1, 1, "LE1763912120:target:0")
        st = wait_for(lambda: (d := ask(cfg, "status")) and d["position"]["size"] == 0
                      and d["account"]["trades_today"] == 3 and d, timeout=15, what="flat after three trips")
        trades = ask(cfg, "trades")["trades"]
        assert [t["direction"] for t in trades] == [1, -1, 1]
        assert [t["exit_reason"] for t in trades] == ["signal", "signal", "target"]
        assert sum(t["pnl_cents"] for t in trades) == st["account"]["realized_day_cents"] == broker_net_cents(sim)
        assert sum(t["fees_cents"] for t in trades) == st["account"]["fees_day_cents"] == 6 * 37
        assert st["account"]["balance_cents"] == round(sim.state()["account"]["balance"] * 100)
        assert "realized P&L of" not in keeper.output()    # the broker-trades cross-check agreed
    finally:
        keeper.terminate(5)


def test_a_close_just_before_sigterm_is_in_the_session_files(tmp_path, sim):
    """The order gateway flattens on its way out, a second before the keeper stops: the keeper's
    last broker check at shutdown puts that round trip in the trades CSV and the report."""
    cfg, keeper = keeper_alone(tmp_path, sim, reconcile_s=60, recheck_s=0.2)
    try:
        place(sim, 0, 1, "LE1763913000:entry:0")
        keeper.kill9()                       # not yet seen: the keeper learns of it at its next start
        keeper.start()
        wait_for(lambda: (d := ask(cfg, "status")) and d["position"]["direction"] == 1, timeout=20,
                 what="long 1 adopted at start")
        place(sim, 1, 1, "gw-shutdown-1:flatten:0")    # the gateway's shutdown flatten
        assert keeper.terminate(20) == 0, keeper.tail()
    finally:
        keeper.terminate(5)
    # the flatten read in the last check explains the flat broker: no false alarm on a clean stop
    assert "position mismatch (shutdown)" not in keeper.output(), keeper.tail()
    day = sim.state()["market"]["now"][:10]
    rows = (tmp_path / "logs" / f"trades_{day}.csv").read_text().splitlines()
    assert len(rows) == 2 and ",flatten," in rows[1], rows
    assert (tmp_path / "logs" / f"report_{day}.html").exists()
