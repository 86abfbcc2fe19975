"""The alerts process for real: `python -m services.alerts`, fed by real publishers on the bus
(ipc sockets), delivering to real HTTP (webhook, a stand-in Telegram API) and SMTP receivers
on loopback, and scraped over HTTP by a Prometheus text parser."""
from __future__ import annotations

import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from common.config import load_config
from common.messages import Position, RiskEvent
from tests.harness.config import write_config
from tests.harness.procs import ServiceProcess, wait_for
from tests.harness.publishers import Publishers
from tests.harness.receivers import HttpReceiver, SmtpReceiver
from tests.harness.sim import free_port

pytestmark = pytest.mark.integration

TOKEN = "123456:TEST-bot-token-never-logged"
HOOK_SECRET = "hook-secret-path-7f3a"


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def alerts_config(tmp_path, hook: HttpReceiver, tg: HttpReceiver | None, smtp: SmtpReceiver | None,
                  metrics_port: int, **alerts):
    sect = {
        "metrics_port": metrics_port,
        "services": ["engine", "orders", "feed", "positions"],
        "service_silent_s": 120,
        "dedup_window_s": 300,
        "webhook": {"url": f"{hook.url}/{HOOK_SECRET}", "min_severity": "WARNING",
                    "rate_limit": {"burst": 50, "per_minute": 600},
                    "delivery": {"backoff_s": 0.2, "attempts": 5}},
    }
    if tg is not None:
        sect["telegram"] = {"base_url": tg.url, "bot_token": TOKEN, "chat_id": "-10042",
                            "rate_limit": {"burst": 50, "per_minute": 600}, "delivery": {"backoff_s": 0.2}}
    if smtp is not None:
        sect["email"] = {"host": "127.0.0.1", "port": smtp.port, "security": "none", "to": ["trader@example.com"],
                         "sender": "bot@example.com", "min_severity": "ERROR", "delivery": {"backoff_s": 0.2}}
    for k, v in alerts.items():
        if isinstance(v, dict) and isinstance(sect.get(k), dict):
            sect[k].update(v)
        else:
            sect[k] = v
    return write_config(tmp_path, None, alerts=sect)


STATS = {
    "engine": {"breakers": ["stale_data"], "rules": []},
    "orders": {"hub": "connected", "working_orders": 2, "rest_free": 117, "http_429": 4, "halted": False,
               "hop_total_us_p50": 850.0, "hop_total_us_p99": 2100.0},
    "feed": {"feed_state": "subscribed", "quotes": lambda: int(time.monotonic() * 100)},   # 100 quotes/s
    "positions": {"realized_day_cents": -1250, "unrealized_cents": 250, "open": {"CON.F.US.MES.H26": 1},
                  "rest_free": 50, "http_429": 0},
}


def bus_for(cfg) -> Publishers:
    """Real publishers for engine, orders, feed and positions, heartbeating with STATS."""
    bus = Publishers(cfg, tuple(STATS))
    for n, st in STATS.items():
        bus.stats[n].update(st)
    return bus


def ready(bus: Publishers, port: int) -> bool:
    """The alerts process reports every publisher up, after two feed heartbeats (a rate)."""
    try:
        m = scrape(port)
    except OSError:
        return False
    return all(m.get(("scalper_service_up", (("service", s),))) == 1.0 for s in STATS) and \
        m.get(("scalper_feed_quotes_per_second", ()), 0) > 0


def test_alerts_reach_webhook_telegram_email_and_metrics_scrape(tmp_path):
    with HttpReceiver() as hook, HttpReceiver() as tg, SmtpReceiver() as smtp:
        port = free_port()
        cfg_path = alerts_config(tmp_path, hook, tg, smtp, port)
        cfg = load_config(cfg_path)
        with ServiceProcess("alerts", cfg_path) as proc, bus_for(cfg) as bus:
            wait_for(lambda: ready(bus, port), 30, interval=0.2, what=f"alerts process up\n{proc.tail()}")
            # --- the Prometheus scrape, fed from the heartbeats just published ---
            m = scrape(port)
            assert m[("scalper_breaker_active", (("breaker", "stale_data"),))] == 1.0
            assert m[("scalper_open_orders", ())] == 2.0
            assert m[("scalper_rest_budget_remaining", (("service", "orders"),))] == 117.0
            assert m[("scalper_rest_429_total", (("service", "orders"),))] == 4.0
            assert m[("scalper_hop_latency_microseconds", (("quantile", "0.99"), ("segment", "total")))] == 2100.0
            assert m[("scalper_position_contracts", (("contract", "CON.F.US.MES.H26"),))] == 1.0
            assert m[("scalper_pnl_realized_day_cents", ())] == -1250.0
            assert m[("scalper_hub_connected", (("hub", "market"),))] == 1.0
            assert m[("scalper_hub_connected", (("hub", "user"),))] == 1.0
            assert 50 < m[("scalper_feed_quotes_per_second", ())] < 200

            # --- a breaker trips (ERROR): every channel gets it ---
            bus.publish("engine", RiskEvent("reject_storm", True, "ERROR", "3 rejects in 60 s"), key="reject_storm")
            got = hook.wait(lambda r: isinstance(r.body, dict) and r.body.get("kind") == "reject_storm",
                            what="the trip at the webhook")[0]
            assert got.path == f"/{HOOK_SECRET}"
            b = got.body
            assert b["severity"] == "ERROR" and b["service"] == "engine" and not b["resolved"]
            assert "reject storm" in b["text"] and b["content"] == b["text"] and b["detail"] == "3 rejects in 60 s"
            t = tg.wait(lambda r: "reject storm" in r.body.get("text", ""), what="the trip at Telegram")[0]
            assert t.path == f"/bot{TOKEN}/sendMessage" and t.body["chat_id"] == "-10042"
            assert t.body["disable_notification"] is False
            mail, _, rcpt = smtp.wait(lambda m: "reject storm" in m["Subject"], what="the trip by e-mail")[0]
            assert rcpt == ["trader@example.com"] and mail["Subject"].startswith("[scalper] ERROR:")
            assert "3 rejects in 60 s" in mail.get_content()

            # --- the same trip again is deduplicated; the clear is delivered as resolved ---
            bus.publish("engine", RiskEvent("reject_storm", True, "ERROR", "3 rejects in 60 s"))
            bus.publish("engine", RiskEvent("reject_storm", False, "INFO", "cool-down over"), key="reject_storm")
            hook.wait(lambda r: r.body.get("kind") == "reject_storm" and r.body["resolved"], what="the clear")
            assert len([b for b in hook.bodies() if b.get("kind") == "reject_storm"]) == 2
            # a WARNING is below e-mail's ERROR threshold, but reaches the chat channels
            bus.publish("orders", RiskEvent("halt", True, "WARNING", "halted: operator"))
            hook.wait(lambda r: r.body.get("kind") == "halt", what="the halt at the webhook")
            tg.wait(lambda r: "halted" in r.body.get("text", ""), what="the halt at Telegram")
            time.sleep(1.0)
            assert not [m for m, _, _ in smtp.messages if "halted" in m["Subject"]]

            # --- a crash loop (any publisher, any RiskEvent): CRITICAL on every channel ---
            bus.publish("orders", RiskEvent("crash_loop", True, "ERROR", "orders exited 5 times in 2 min; stopped"))
            hook.wait(lambda r: r.body.get("kind") == "crash_loop" and r.body["severity"] == "CRITICAL", what="crash loop")
            smtp.wait(lambda m: "CRITICAL" in m["Subject"] and "Crash loop" in m["Subject"], what="crash loop mail")

            # --- an unprotected position seen by the keeper: CRITICAL after unprotected_s ---
            bus.publish("positions", Position("CON.F.US.MES.H26", 1, 1, "6000.25"), key="CON.F.US.MES.H26")
            hook.wait(lambda r: r.body.get("kind") == "unprotected_position" and not r.body["resolved"],
                      timeout=30, what="unprotected position alert")
            bus.publish("positions", Position("CON.F.US.MES.H26", 1, 1, "6000.25", stop_order_id=99),
                                          key="CON.F.US.MES.H26")
            hook.wait(lambda r: r.body.get("kind") == "unprotected_position" and r.body["resolved"],
                      what="unprotected position resolved")
            assert proc.alive(), proc.tail()
            # the receiver has the request a moment before the courier counts it delivered
            m = wait_for(lambda: (m := scrape(port)) and
                         m[("scalper_alerts_delivered_total", (("channel", "webhook"),))] >= 6 and m,
                         5, what="six webhook deliveries counted")
            assert m[("scalper_alerts_suppressed_total", (("reason", "duplicate"),))] >= 1
            rc = proc.terminate(15)
        assert rc == 0, proc.tail()
        # no secret in any log line or in the process output
        logs = "".join(p.read_text(errors="replace") for p in (tmp_path / "logs").rglob("*.log"))
        logs += proc.output()
        assert "ALERT: webhook delivered" in logs
        assert TOKEN not in logs and HOOK_SECRET not in logs


def test_channel_down_is_retried_logged_and_never_fatal(tmp_path):
    """The webhook answers 503 twice, then 429 (Retry-After), then accepts: the alert arrives.
    Telegram points at a closed port the whole time: retries are logged, the process lives, and
    the webhook keeps getting alerts meanwhile."""
    with HttpReceiver() as hook:
        port = free_port()
        dead = free_port()
        cfg_path = alerts_config(tmp_path, hook, None, None, port,
                                 telegram={"base_url": f"http://127.0.0.1:{dead}", "bot_token": TOKEN,
                                           "chat_id": "1", "delivery": {"backoff_s": 0.2, "attempts": 3,
                                                                        "timeout_s": 1}})
        cfg = load_config(cfg_path)
        with ServiceProcess("alerts", cfg_path) as proc, bus_for(cfg) as bus:
            wait_for(lambda: ready(bus, port), 30, interval=0.2, what=f"alerts process up\n{proc.tail()}")
            hook.fail_next(2, 503)
            hook.fail_next(1, 429)
            tries = hook.attempts
            bus.publish("engine", RiskEvent("price_shock", True, "WARNING", "12 ticks in 1 s"), key="price_shock")
            hook.wait(lambda r: r.body.get("kind") == "price_shock", timeout=30, what="the alert after retries")
            assert hook.attempts - tries == 4
            bus.publish("engine", RiskEvent("wide_spread", True, "WARNING", "spread 6 ticks"), key="wide_spread")
            hook.wait(lambda r: r.body.get("kind") == "wide_spread", what="a second alert while Telegram is down")
            wait_for(lambda: "telegram failed" in proc.output() and "not delivered" in proc.output(), 30,
                     what=f"Telegram's failures logged\n{proc.tail()}")
            assert proc.alive(), proc.tail()
            m = scrape(port)
            assert m[("scalper_alerts_lost_total", (("channel", "telegram"),))] >= 1
            assert m[("scalper_alerts_failed_attempts_total", (("channel", "webhook"),))] == 3
        assert TOKEN not in proc.output()


def test_bad_alerts_config_is_one_line(tmp_path):
    cfg_path = write_config(tmp_path, None, alerts={"metrics_host": "0.0.0.0"})
    proc = ServiceProcess("alerts", cfg_path).start()
    proc.proc.wait(30)
    assert proc.proc.returncode == 2
    lines = [l for l in proc.output().splitlines() if l.strip()]
    assert len(lines) == 1 and "alerts.metrics_host" in lines[0] and "not loopback" in lines[0], lines


def test_metrics_port_taken_is_one_line_exit_2(tmp_path):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        cfg_path = write_config(tmp_path, None, alerts={"metrics_port": taken},
                                logging={"dir": str(tmp_path / "logs"), "level": "INFO", "console": True})
        proc = ServiceProcess("alerts", cfg_path).start()
        proc.proc.wait(30)
    assert proc.proc.returncode == 2
    errors = [l for l in proc.output().splitlines() if "[ERROR]" in l or "Traceback" in l]
    assert len(errors) == 1 and "alerts.metrics_port" in errors[0] and str(taken) in errors[0], proc.output()
