"""The alert rules, pure: bus messages and an injected clock in, Alerts out. Also the metrics
collector over heartbeats and the courier's retry loop with a fake channel."""
from __future__ import annotations

from datetime import time

from prometheus_client import CollectorRegistry, generate_latest

from common.clock import to_ny
from common.messages import Account, Heartbeat, Position, RiskEvent, RoundTrip
from common.session import SessionCalendar
from services.alerts.alert import Alert
from services.alerts.channel import DeliveryError
from services.alerts.config import AlertsConfig, DeliveryConfig
from services.alerts.courier import Courier
from services.alerts.metrics import Collector, MetricsState
from services.alerts.rules import Rules

S = 1_000_000_000
T0 = 1_700_000_000 * S


def rules(**kw) -> Rules:
    return Rules(AlertsConfig(**kw), max_daily_loss_cents=5000, session=None, now_ns=T0)


def hb(service, pid=100, state="ok", **stats) -> Heartbeat:
    return Heartbeat(service, state, pid, 1.0, 0, stats)


def pos(size=1, direction=1, stop=None) -> Position:
    return Position("CON.F.US.MES.H26", direction if size else 0, size, "6000.25", stop_order_id=stop)


def account(realized=0, unreal=0, trades=0, day="2026-11-23") -> Account:
    return Account(1, 100_000 + realized, day, realized, unreal, 74 * trades, 0, trades)


# -- risk events ----------------------------------------------------------------------
def test_trip_and_clear_clear_inherits_trip_severity():
    r = rules()
    [a] = r.on_risk("engine", RiskEvent("stale_data", True, "WARNING", "no quote for 5 s"), T0)
    assert (a.kind, a.severity, a.resolved, a.src) == ("stale_data", "WARNING", False, "engine")
    assert "stale market data" in a.title and a.text == "no quote for 5 s"
    [c] = r.on_risk("engine", RiskEvent("stale_data", False, "INFO", "fresh quote"), T0 + S)
    assert c.resolved and c.severity == "WARNING" and c.key != a.key


def test_severity_override_for_dangerous_kinds_and_unknown_kinds_pass_through():
    r = rules()
    [a] = r.on_risk("orders", RiskEvent("unprotected", True, "ERROR", "MES unprotected"), T0)
    assert a.severity == "CRITICAL"
    [b] = r.on_risk("supervisor", RiskEvent("crash_loop", True, "ERROR", "orders exited 5 times in 2 min"), T0)
    assert b.severity == "CRITICAL" and b.src == "supervisor"
    [c] = r.on_risk("x", RiskEvent("brand_new_kind", True, "ERROR", "d"), T0)
    assert c.severity == "ERROR" and c.title == "brand new kind (x)"


def test_ignored_kinds_and_snapshot_replays_do_not_alert():
    r = rules()
    assert r.on_risk("engine", RiskEvent("entry_blocked:session", True, "WARNING", "closed"), T0) == []
    # a clear of something never seen, replayed by a snapshot: nothing
    assert r.on_risk("engine", RiskEvent("wide_spread", False, "INFO", "back"), T0, snapshot=True) == []
    # an active state at first sight (snapshot at start): the trader should know
    assert len(r.on_risk("engine", RiskEvent("day_halt", True, "ERROR", "daily loss"), T0, snapshot=True)) == 1
    # the same state replayed again (publisher restarted): nothing new
    assert r.on_risk("engine", RiskEvent("day_halt", True, "ERROR", "daily loss"), T0, snapshot=True) == []
    # a snapshot that shows the state changed while we were not looking: alert
    assert len(r.on_risk("engine", RiskEvent("day_halt", False, "INFO", "new day"), T0, snapshot=True)) == 1


# -- heartbeats: silence, restarts, hubs ---------------------------------------------------
def test_silent_service_alerts_once_then_back():
    r = rules(services=["orders"], service_silent_s=10, startup_grace_s=0)
    assert r.tick(T0 + 9 * S) == []
    [a] = r.tick(T0 + 11 * S)
    assert a.kind == "service_silent" and "since the alerts service started" in a.text
    assert r.tick(T0 + 20 * S) == []                      # once
    [b] = r.on_heartbeat(hb("orders"), T0 + 21 * S)
    assert b.resolved and "orders is back" in b.title
    assert r.tick(T0 + 25 * S) == []


def test_restart_seen_as_new_pid():
    r = rules(services=[])
    assert r.on_heartbeat(hb("engine", pid=1), T0) == []
    [a] = r.on_heartbeat(hb("engine", pid=2), T0 + S)
    assert a.kind == "service_restarted" and "pid 1 -> 2" in a.text


def test_hub_outage_only_after_threshold():
    r = rules(services=[], hub_outage_s=30)
    r.on_heartbeat(hb("feed", feed_state="subscribed"), T0)
    r.on_heartbeat(hb("feed", feed_state="reconnecting"), T0 + S)
    assert r.tick(T0 + 20 * S) == []
    # a short blip that heals before the threshold never alerts
    assert r.on_heartbeat(hb("feed", feed_state="subscribed"), T0 + 25 * S) == []
    assert r.tick(T0 + 40 * S) == []
    r.on_heartbeat(hb("orders", hub="reconnecting"), T0 + 50 * S)
    [a] = r.tick(T0 + 81 * S)
    assert a.kind == "hub_outage" and a.title == "user hub down" and "reconnecting for 31 s" in a.text
    [b] = r.on_heartbeat(hb("orders", hub="connected"), T0 + 90 * S)
    assert b.resolved and "after 40 s" in b.text


# -- positions --------------------------------------------------------------------------------
def test_unprotected_position_after_grace_then_resolved_by_stop():
    r = rules(services=[], unprotected_s=5)
    assert r.on_position(pos(1, 1, stop=None), T0) == []
    assert r.tick(T0 + 4 * S) == []
    [a] = r.tick(T0 + 6 * S)
    assert a.severity == "CRITICAL" and "WITHOUT a stop" in a.title and "long 1" in a.text
    [b] = r.on_position(pos(1, 1, stop=777), T0 + 7 * S)
    assert b.resolved and "777" in b.text


def test_stop_arriving_within_grace_never_alerts():
    r = rules(services=[], unprotected_s=5)
    r.on_position(pos(2, -1), T0)
    assert r.on_position(pos(2, -1, stop=5), T0 + 2 * S) == []
    assert r.tick(T0 + 10 * S) == []
    assert r.on_position(pos(0), T0 + 11 * S) == []


def test_loss_warning_once_per_day():
    r = rules(services=[], loss_warn_fraction=0.8)
    assert r.on_account(account(realized=-3000, unreal=-900), T0) == []        # 78 %
    [a] = r.on_account(account(realized=-3000, unreal=-1100), T0)               # 82 %
    assert a.kind == "daily_loss_warning" and "82%" in a.title and a.severity == "WARNING"
    assert r.on_account(account(realized=-4500), T0) == []                      # once a day
    [b] = r.on_account(account(realized=-6000, day="2026-11-24"), T0)
    assert b.severity == "ERROR"                                                # past the limit


# -- end of day ----------------------------------------------------------------------------------
def test_eod_flatten_done_then_summary_after_delay():
    r = rules(services=[], summary_delay_s=5)
    r.on_account(account(realized=1250, trades=3, day=to_ny(T0).date().isoformat()), T0)
    r.on_position(pos(1, 1, stop=9), T0)
    r.on_round_trip(RoundTrip("MES", 1, 1, "1", "2", 0, T0, 5, 2000, 74, "target"))
    r.on_round_trip(RoundTrip("MES", 1, 1, "1", "2", 0, T0, 5, 500, 74, "target"))
    r.on_round_trip(RoundTrip("MES", -1, 1, "1", "2", 0, T0, -5, -1250, 74, "stop"))
    r.on_risk("engine", RiskEvent("end_of_day", True, "WARNING", "flatten time"), T0)
    assert r.tick(T0 + S) == []                                # still holding
    r.on_position(pos(0), T0 + 2 * S)
    [done] = r.tick(T0 + 2 * S)
    assert done.kind == "eod_flatten" and done.severity == "INFO" and "flat" in done.title
    assert r.tick(T0 + 6 * S) == []
    [summ] = r.tick(T0 + 8 * S)
    assert summ.kind == "eod_summary" and "+$12.50 in 3 trades" in summ.title
    assert "2 won, 1 lost" in summ.text and "best +$20.00, worst -$12.50" in summ.text
    assert r.tick(T0 + 20 * S) == []                           # once


def test_eod_not_flat_after_verify_is_critical():
    r = rules(services=[], eod_verify_s=60)
    r.on_position(pos(1, -1, stop=3), T0)
    r.on_risk("engine", RiskEvent("end_of_day", True, "WARNING", "flatten time"), T0)
    assert r.tick(T0 + 59 * S) == []
    [a] = r.tick(T0 + 61 * S)
    assert a.severity == "CRITICAL" and "NOT flat" in a.title and "short 1" in a.text
    assert r.tick(T0 + 70 * S) == []


def test_eod_flatten_failed_event_while_holding():
    r = rules(services=[])
    r.on_position(pos(1, 1, stop=3), T0)
    r.on_risk("engine", RiskEvent("end_of_day", True, "WARNING", "flatten time"), T0)
    [f] = r.on_risk("orders", RiskEvent("flatten_failed", True, "ERROR", "not verified flat"), T0 + S)
    assert f.severity == "CRITICAL"
    [a] = r.tick(T0 + 2 * S)
    assert "FAILED" in a.title and a.severity == "CRITICAL"


def test_summary_at_session_end_when_no_flatten_was_seen():
    cal = SessionCalendar(time(9, 30), time(16, 30), time(16, 25), 10, calendar=None)
    r = Rules(AlertsConfig(services=[]), 5000, cal, T0)
    r.on_account(account(realized=-200, trades=1), T0)
    day_1620 = cal.times(__import__("datetime").date(2026, 11, 23))
    assert r.tick(T0, day_1620.end_ns - S) == []
    [s] = r.tick(T0, day_1620.end_ns + S)
    assert s.kind == "eod_summary" and "-$2.00 in 1 trades" in s.title
    assert r.tick(T0, day_1620.end_ns + 60 * S) == []


# -- metrics ------------------------------------------------------------------------------------
def test_metrics_from_heartbeats():
    now = [100.0]
    st = MetricsState(["feed", "engine", "orders", "positions", "inference"], stale_s=3, clock=lambda: now[0])
    st.observe(hb("feed", quotes=1000, trades=10, feed_state="subscribed", pub_latency_us={"median": 40.0, "p99": 90.0}))
    now[0] = 102.0
    st.observe(hb("feed", quotes=1400, trades=12, feed_state="subscribed"))
    st.observe(hb("engine", breakers=["stale_data"], rules=[]))
    st.observe(hb("orders", pid=7, hub="connected", working_orders=2, rest_free=120, http_429=3, halted=False,
                  hop_total_us_p50=900.0, hop_total_us_p99=2500.0, hop_inference_us_p50=80.0))
    st.observe(hb("positions", realized_day_cents=-1250, unrealized_cents=300, trades_today=4,
                  open={"CON.F.US.MES.H26": -2}, rest_free=55, http_429=0))
    now[0] = 103.0
    st.observe(hb("orders", pid=8, hub="reconnecting", working_orders=0, rest_free=118, http_429=3, halted=True))
    st.observe(hb("engine", breakers=[], rules=[]))
    reg = CollectorRegistry(auto_describe=False)
    reg.register(Collector(st))
    text = generate_latest(reg).decode()
    lines = set(text.splitlines())
    assert 'scalper_service_up{service="feed"} 1.0' in lines
    assert 'scalper_service_up{service="inference"} 0.0' in lines       # never seen
    assert 'scalper_service_restarts_total{service="orders"} 1.0' in lines
    assert "scalper_feed_quotes_per_second 200.0" in lines
    assert "scalper_feed_quotes_total 1400.0" in lines
    assert 'scalper_hop_latency_microseconds{quantile="0.99",segment="total"} 2500.0' not in lines  # orders restarted: no hops now
    assert "scalper_open_orders 0.0" in lines and "scalper_orders_halted 1.0" in lines
    assert 'scalper_position_contracts{contract="CON.F.US.MES.H26"} -2.0' in lines
    assert "scalper_pnl_realized_day_cents -1250.0" in lines
    assert 'scalper_breaker_active{breaker="stale_data"} 0.0' in lines   # cleared: reads 0, not gone
    assert 'scalper_rest_budget_remaining{service="positions"} 55.0' in lines
    assert 'scalper_rest_429_total{service="orders"} 3.0' in lines
    assert 'scalper_hub_connected{hub="user"} 0.0' in lines and 'scalper_hub_connected{hub="market"} 1.0' in lines
    now[0] = 110.0                                                        # everyone silent for 7 s
    text = generate_latest(reg).decode()
    assert 'scalper_service_up{service="orders"} 0.0' in text.splitlines()


def test_metrics_hop_latencies():
    st = MetricsState(["orders"], clock=lambda: 0.0)
    st.observe(hb("orders", hop_total_us_p50=900.0, hop_total_us_p99=2500.0, hop_broker_ack_us_p50=700.5))
    text = generate_latest(_reg(st)).decode().splitlines()
    assert 'scalper_hop_latency_microseconds{quantile="0.99",segment="total"} 2500.0' in text
    assert 'scalper_hop_latency_microseconds{quantile="0.5",segment="broker_ack"} 700.5' in text


def _reg(st):
    reg = CollectorRegistry(auto_describe=False)
    reg.register(Collector(st))
    return reg


# -- courier --------------------------------------------------------------------------------------
class FlakyChannel:
    name = "flaky"

    def __init__(self, failures: list[DeliveryError]):
        self.failures = list(failures)
        self.got: list[Alert] = []

    def send(self, alert: Alert) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self.got.append(alert)


def test_courier_retries_with_backoff_and_honours_retry_after():
    pauses: list[float] = []
    ch = FlakyChannel([DeliveryError("HTTP 503"), DeliveryError("HTTP 429", retry_after_s=7.0), DeliveryError("x")])
    c = Courier(ch, DeliveryConfig(attempts=5, backoff_s=1.0, backoff_max_s=60), sleep=pauses.append)
    c._deliver(Alert("k", "ERROR", "t"))
    assert [a.kind for a in ch.got] == ["k"]
    assert pauses == [1.0, 7.0, 4.0] and c.stats.sent == 1 and c.stats.failed_attempts == 3


def test_courier_gives_up_after_attempts_and_on_permanent_errors():
    pauses: list[float] = []
    ch = FlakyChannel([DeliveryError("down")] * 10)
    c = Courier(ch, DeliveryConfig(attempts=3, backoff_s=0.5), sleep=pauses.append)
    c._deliver(Alert("k", "ERROR", "t"))
    assert ch.got == [] and c.stats.lost == 1 and len(pauses) == 2
    ch2 = FlakyChannel([DeliveryError("HTTP 400", retry=False)])
    c2 = Courier(ch2, DeliveryConfig(attempts=5), sleep=pauses.append)
    c2._deliver(Alert("k", "ERROR", "t"))
    assert c2.stats.lost == 1 and c2.stats.failed_attempts == 1


def test_courier_queue_full_drops_oldest():
    c = Courier(FlakyChannel([]), DeliveryConfig(queue=2))       # not started: nothing drains
    for k in "abc":
        c.submit(Alert(k, "ERROR", k))
    assert [a.kind for a in c.queue] == ["b", "c"] and c.stats.dropped == 1


def test_eod_waits_for_working_orders_to_go():
    r = rules(services=[], eod_verify_s=60)
    r.on_heartbeat(hb("orders", working_orders=1, hub="connected"), T0)
    r.on_risk("engine", RiskEvent("end_of_day", True, "WARNING", "flatten time"), T0)
    assert r.tick(T0 + S) == []                       # no position, but an order still works
    r.on_heartbeat(hb("orders", working_orders=0, hub="connected"), T0 + 2 * S)
    [a] = r.tick(T0 + 2 * S)
    assert "flat" in a.title and "no working order" in a.text


def test_grafana_dashboard_uses_only_exported_metrics():
    """docs/grafana/scalper.json queries only series the exporter really produces."""
    import json
    import re
    from pathlib import Path

    from common.clock import EventClock
    from common.config import Config
    from services.alerts.watcher import Watcher

    w = Watcher(Config(), AlertsConfig(metrics_port=None, webhook={"url": "http://127.0.0.1:9/never-started"}),
                EventClock())
    w.emit([Alert("x", "ERROR", "t")], T0)          # queued on a courier that is not started: nothing sent
    st = w.metrics
    st.observe(hb("feed", quotes=10, trades=1, feed_state="subscribed", pub_latency_us={"median": 1.0, "p99": 2.0}))
    st.observe(hb("engine", breakers=["stale_data"], rules=["daily_loss"]))
    st.observe(hb("orders", hub="connected", working_orders=0, rest_free=1, http_429=0, halted=False,
                  orders_sent=1, rejects=0, fills=1, hop_total_us_p50=1.0, hop_total_us_p99=2.0))
    st.observe(hb("positions", realized_day_cents=0, unrealized_cents=0, trades_today=0, consecutive_losses=0,
                  mismatch_active=False, open={"C": 0}, rest_free=1, http_429=0))
    text = generate_latest(_reg(st)).decode()
    exported = {l.split("{")[0].split(" ")[0] for l in text.splitlines() if l and not l.startswith("#")}
    dash = json.loads((Path(__file__).resolve().parents[2] / "docs" / "grafana" / "scalper.json").read_text())
    used = {m for p in dash["panels"] for t in p.get("targets", []) for m in re.findall(r"scalper_[a-z0-9_]+", t["expr"])}
    assert used and used <= exported, sorted(used - exported)


def test_a_new_trip_after_a_clear_is_never_deduplicated_but_a_repeat_is():
    from services.alerts.dedup import Dedup
    r, d = rules(), Dedup(300)
    keys = []
    for active in (True, True, False, True):       # trip, repeat, clear, trip again: all within seconds
        for a in r.on_risk("orders", RiskEvent("flatten_failed", active, "ERROR", "not verified flat"), T0):
            keys.append((a.resolved, d.fresh(a.key, T0)))
    assert keys == [(False, True), (False, False), (True, True), (False, True)]


def test_the_same_fact_from_a_second_service_is_one_alert_and_resolved_when_the_last_clears():
    r = rules()
    on = RiskEvent("crash_loop", True, "ERROR", "orders exited 5 times in 10 min")
    off = RiskEvent("crash_loop", False, "INFO", "running again")
    [a] = r.on_risk("supervision", on, T0)
    assert r.on_risk("engine", on, T0 + S) == []            # the engine's breaker echoing it
    assert r.on_risk("supervision", off, T0 + 2 * S) == []  # the engine still reports it on
    [c] = r.on_risk("engine", off, T0 + 3 * S)
    assert not a.resolved and c.resolved and r.corroborated == 2
    [again] = r.on_risk("engine", on, T0 + 4 * S)          # a new trip is news again
    assert not again.resolved and again.key != a.key


def test_sent_alerts_survive_a_restart_and_once_a_day_alerts_are_never_repeated(tmp_path):
    from services.alerts.dedup import Dedup
    path = tmp_path / "state" / "alerts_sent.json"
    first = Dedup(300, path)
    assert first.fresh("summary:2026-11-23", T0) and first.fresh("risk:orders:halt:on#1", T0)
    again = Dedup(300, path)                           # the alerts process restarted
    assert not again.fresh("summary:2026-11-23", T0 + 3600 * S)   # the day's summary, an hour later
    assert not again.fresh("risk:orders:halt:on#1", T0 + 10 * S)
    assert again.fresh("risk:orders:halt:on#1", T0 + 400 * S)      # outside the window: news again
    path.write_text("{not json")
    assert Dedup(300, path).fresh("summary:2026-11-23", T0)       # unreadable: starts empty, alerts


def test_a_second_outage_episode_is_a_new_alert():
    r = rules(services=[], hub_outage_s=1)
    keys = []
    for start in (0, 10):
        r.on_heartbeat(hb("feed", feed_state="reconnecting"), T0 + start * S)
        keys += [a.key for a in r.tick(T0 + (start + 2) * S)]
        keys += [a.key for a in r.on_heartbeat(hb("feed", feed_state="subscribed"), T0 + (start + 3) * S)]
    assert len(keys) == 4 and len(set(keys)) == 4


def test_severity_patterns_cover_kinds_with_a_suffix():
    r = rules()
    [a] = r.on_risk("supervisor", RiskEvent("crash_loop:orders", True, "WARNING", "5 exits in 2 min"), T0)
    assert a.severity == "CRITICAL" and a.title == "Crash loop: service stopped: orders (supervisor)"


def test_a_program_supervisord_stopped_is_not_silent_and_startup_grace():
    r = rules(services=["engine", "feed"], service_silent_s=10, startup_grace_s=60)
    assert r.tick(T0 + 30 * S) == []                      # never heard from, inside the grace
    r.on_heartbeat(hb("engine"), T0 + 30 * S)
    r.supervisor = {"engine": "STOPPING", "feed": "BACKOFF"}
    [a] = r.tick(T0 + 61 * S)                             # engine stopped on purpose: nothing
    assert a.src == "feed" and "supervisord: BACKOFF" in a.text
    r.supervisor = {"engine": "RUNNING"}                  # running yet silent: that is an outage
    [b] = r.tick(T0 + 62 * S)
    assert b.src == "engine" and "for 32 s" in b.text


def test_no_silent_alert_while_supervisord_shuts_down():
    r = rules(services=["orders"], service_silent_s=10, startup_grace_s=0)
    r.on_heartbeat(hb("orders"), T0)
    r.supervisor = {"*": "SHUTDOWN"}
    assert r.tick(T0 + 30 * S) == []
