"""Alert routing policy, pure: dedup, token bucket, quiet hours and the router, on an injected clock."""
from __future__ import annotations

from datetime import datetime, time
from zoneinfo import ZoneInfo

import pytest

from common.config import ConfigError, load_config
from services.alerts.alert import Alert, digest, rank
from services.alerts.config import AlertsConfig
from services.alerts.dedup import Dedup
from services.alerts.quiet import QuietHours
from services.alerts.ratelimit import TokenBucket
from services.alerts.routing import ChannelPolicy, Router

S = 1_000_000_000
NY = ZoneInfo("America/New_York")


def ny(y, mo, d, h, mi) -> int:
    return int(datetime(y, mo, d, h, mi, tzinfo=NY).timestamp()) * S


def alert(kind="stale_data", sev="WARNING", key="") -> Alert:
    return Alert(kind, sev, f"{kind} tripped", "detail", key=key)


# -- dedup -----------------------------------------------------------------------------
def test_dedup_suppresses_same_key_inside_window_only():
    d = Dedup(60)
    assert d.fresh("a", 0)
    assert not d.fresh("a", 59 * S)
    assert d.fresh("b", 59 * S)              # another key is another alert
    assert d.fresh("a", 60 * S)              # the window is measured from the last one let through
    assert not d.fresh("a", 61 * S)
    assert d.suppressed == 2


def test_dedup_window_zero_lets_everything_through():
    d = Dedup(0)
    assert all(d.fresh("a", 5) for _ in range(3))


# -- token bucket ------------------------------------------------------------------------
def test_token_bucket_burst_then_rate():
    b = TokenBucket(burst=3, per_minute=6, now_ns=0)      # one token every 10 s
    assert [b.take(0) for _ in range(4)] == [True, True, True, False]
    assert not b.take(9 * S)
    assert b.take(10 * S)
    assert not b.take(10 * S)
    assert b.take(60 * S) and b.take(60 * S) and b.take(60 * S)   # refills up to the burst, no more
    assert not b.take(60 * S)


# -- quiet hours ----------------------------------------------------------------------------
def test_quiet_hours_across_midnight_in_new_york():
    q = QuietHours(time(22, 0), time(7, 0), "America/New_York")
    assert q.active(ny(2026, 11, 23, 23, 30))
    assert q.active(ny(2026, 11, 24, 6, 59))
    assert not q.active(ny(2026, 11, 24, 7, 0))
    assert not q.active(ny(2026, 11, 23, 21, 59))
    assert q.active(ny(2026, 11, 23, 22, 0))


def test_quiet_hours_same_day_window_and_empty_window():
    q = QuietHours(time(12, 0), time(13, 0), "UTC")
    noon_utc = int(datetime(2026, 11, 23, 12, 30, tzinfo=ZoneInfo("UTC")).timestamp()) * S
    assert q.active(noon_utc)
    assert not q.active(noon_utc + 3600 * S)
    assert not QuietHours(time(9, 0), time(9, 0)).active(noon_utc)


# -- router --------------------------------------------------------------------------------
def policy(name="webhook", min_sev="WARNING", burst=2, per_minute=6, always=("eod_summary",)) -> ChannelPolicy:
    return ChannelPolicy(name, min_sev, tuple(always), TokenBucket(burst, per_minute, 0))


def test_router_severity_threshold_and_always_kinds():
    r = Router([policy("chat", "WARNING", burst=10), policy("mail", "ERROR", burst=10)], Dedup(0))
    assert [n for n, _ in r.route(alert(sev="INFO", key="1"), 0)] == []
    assert [n for n, _ in r.route(alert(sev="WARNING", key="2"), 0)] == ["chat"]
    assert [n for n, _ in r.route(alert(sev="ERROR", key="3"), 0)] == ["chat", "mail"]
    # the summary is INFO but listed in `always`
    assert [n for n, _ in r.route(alert("eod_summary", "INFO", key="4"), 0)] == ["chat", "mail"]


def test_router_deduplicates_before_routing():
    r = Router([policy()], Dedup(300))
    assert len(r.route(alert(key="k"), 0)) == 1
    assert r.route(alert(key="k"), 10 * S) == []
    assert r.stats.deduplicated == 1


def test_router_rate_limit_holds_in_order_and_releases_one_digest():
    r = Router([policy(burst=2, per_minute=6)], Dedup(0))
    sent = [r.route(alert(f"k{i}", key=f"k{i}"), 0) for i in range(5)]
    assert [len(s) for s in sent] == [1, 1, 0, 0, 0]
    assert r.pending() == 3 and r.stats.rate_held == 3
    assert r.tick(5 * S) == []                       # no token yet
    out = r.tick(10 * S)
    assert len(out) == 1
    name, d = out[0]
    assert d.kind == "digest" and d.held == 3
    assert [l.split("] ")[1].split(" ")[0] for l in d.text.splitlines()] == ["k2", "k3", "k4"]
    assert r.pending() == 0
    # while a backlog exists a new alert queues behind it rather than jumping ahead
    r2 = Router([policy(burst=1, per_minute=6)], Dedup(0))
    r2.route(alert(key="a"), 0)
    r2.route(alert(key="b"), 0)
    assert r2.route(alert(key="c"), 10 * S) == []    # a token is back, but "b" is older
    assert r2.tick(10 * S)[0][1].held == 2


def test_router_critical_bypasses_rate_limit_and_quiet_hours():
    q = QuietHours(time(22, 0), time(7, 0), "America/New_York")
    r = Router([policy(burst=1)], Dedup(0), q, "ERROR")
    night = ny(2026, 11, 23, 23, 0)
    assert r.route(alert(key="w", sev="WARNING"), night) == []          # quiet: held
    assert len(r.route(alert(key="c1", sev="CRITICAL"), night)) == 1
    assert len(r.route(alert(key="c2", sev="CRITICAL"), night)) == 1    # bucket empty: still sent
    assert r.stats.quiet_held == 1


def test_router_quiet_hours_hold_until_morning_then_digest():
    q = QuietHours(time(22, 0), time(7, 0), "America/New_York")
    r = Router([policy(burst=5)], Dedup(0), q, "ERROR")
    night = ny(2026, 11, 23, 23, 0)
    assert r.route(alert(key="w1"), night) == []
    assert r.route(alert(key="w2"), night + 60 * S) == []
    assert len(r.route(alert(key="e", sev="ERROR"), night + 120 * S)) == 1   # ERROR passes at night
    assert r.tick(ny(2026, 11, 24, 6, 59)) == []
    out = r.tick(ny(2026, 11, 24, 7, 0))
    assert len(out) == 1 and out[0][1].held == 2 and "quiet hours" in out[0][1].title


def test_router_flush_returns_everything_held():
    r = Router([policy(burst=1)], Dedup(0))
    for k in "abc":
        r.route(alert(key=k), 0)
    out = r.flush(0)
    assert len(out) == 1 and out[0][1].held == 2 and r.pending() == 0


def test_digest_takes_the_worst_severity_and_truncates():
    many = [alert(key=str(i), sev="ERROR" if i == 7 else "WARNING") for i in range(30)]
    d = digest(many, "rate limit", 1, max_lines=20)
    assert d.severity == "ERROR" and d.held == 30
    assert d.text.splitlines()[-1].startswith("- ... and 10 more")


def test_unknown_severity_counts_as_warning():
    assert Alert("x", "loud", "t").severity == "WARNING"
    assert rank("critical") == rank("CRITICAL")


# -- config ----------------------------------------------------------------------------------
def test_config_secrets_from_env_and_channels_off_when_unset(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("alerts:\n  webhook:\n    url: ${HOOK}\n  telegram:\n    bot_token: ${TG}\n    chat_id: ${CHAT}\n"
                 "  email:\n    host: ${SMTP_HOST}\n    to: ${MAIL_TO}\n")
    cfg = load_config(p, env={"HOOK": "https://hooks.example/T0K3N", "TG": "123:abc", "CHAT": "42",
                              "MAIL_TO": "a@x.io, b@x.io"})
    a = cfg.section("alerts", AlertsConfig)
    assert a.webhook.url.get_secret_value() == "https://hooks.example/T0K3N"
    assert "T0K3N" not in repr(a) and "123:abc" not in repr(a)
    assert a.telegram.chat_id == "42"
    assert a.email.host is None                  # unset: the channel is off
    off = load_config(p, env={}).section("alerts", AlertsConfig)
    assert off.webhook.url is None and off.telegram.bot_token is None


@pytest.mark.parametrize("yaml_text, needle", [
    ("alerts:\n  metrics_host: 0.0.0.0\n", "not loopback"),
    ("alerts:\n  quiet_hours: {start: '22:00', end: '07:00', timezone: Mars/Base}\n", "unknown time zone"),
    ("alerts:\n  webhook: {url: 'http://x', format: ntfy}\n", "topic"),
    ("alerts:\n  email: {host: smtp.x}\n", "alerts.email.to"),
    ("alerts:\n  webhook: {min_severity: LOUD}\n", "alerts.webhook.min_severity"),
])
def test_config_errors_are_one_line(tmp_path, yaml_text, needle):
    p = tmp_path / "c.yaml"
    p.write_text(yaml_text)
    with pytest.raises(ConfigError) as e:
        load_config(p, env={}).section("alerts", AlertsConfig)
    msg = str(e.value)
    assert needle in msg and "\n" not in msg


def test_alert_line_is_one_line_for_the_log():
    a = Alert("eod_summary", "INFO", "Day summary", "trades: 3\nnet P&L: +$1.00\n")
    assert a.line() == "[INFO] Day summary: trades: 3; net P&L: +$1.00"
    assert "\n" in a.body()
