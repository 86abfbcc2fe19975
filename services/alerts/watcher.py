"""The alerts process's wiring: bus in, rules, router, couriers out; metrics on the side.

It subscribes to every publisher named `bus.*_pub` (with its `*_snap` when there is one), so
a new publisher (the supervisord crash-loop listener) is watched as soon as it is in `bus:`.
It binds nothing on the bus and sends nothing to a trading service: it cannot slow or block
trading. Delivery runs on the couriers' threads, the Prometheus endpoint on its own thread.
"""
from __future__ import annotations

import time

from loguru import logger
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from common.bus import ServiceLoop, Subscriber
from common.clock import EventClock
from common.config import Config
from common.logging import register_secret
from common.messages import Account, Heartbeat, Position, RiskEvent, RoundTrip
from common.session import SessionCalendar
from services.alerts.alert import Alert
from services.alerts.config import AlertsConfig
from services.alerts.courier import Courier
from services.alerts.dedup import Dedup
from services.alerts.metrics import Collector, MetricsState
from services.alerts.quiet import QuietHours
from services.alerts.ratelimit import TokenBucket
from services.alerts.routing import ChannelPolicy, Router
from services.alerts.rules import Rules
from services.alerts.smtp import EmailChannel
from services.alerts.supervisor import SupervisorWatch
from services.alerts.telegram import TelegramChannel
from services.alerts.webhook import WebhookChannel

SERVICE = "alerts"
TOPICS = [RiskEvent, Heartbeat, Position, Account, RoundTrip]
LOG_LEVEL = {"INFO": "INFO", "WARNING": "WARNING", "ERROR": "ERROR", "CRITICAL": "CRITICAL"}


def build_couriers(sect: AlertsConfig) -> list[tuple[Courier, ChannelPolicy]]:
    """A courier and a routing policy for each channel whose address is configured."""
    now = time.time_ns()
    out = []

    def policy(name, c):
        return ChannelPolicy(name, c.min_severity, tuple(c.always),
                             TokenBucket(c.rate_limit.burst, c.rate_limit.per_minute, now))
    w, t, e = sect.webhook, sect.telegram, sect.email
    if w.url is not None and w.url.get_secret_value():
        register_secret(w.url.get_secret_value())
        ch = WebhookChannel(w.url.get_secret_value(), w.format, w.topic, w.delivery.timeout_s)
        out.append((Courier(ch, w.delivery), policy(ch.name, w)))
    if t.bot_token is not None and t.bot_token.get_secret_value() and t.chat_id:
        register_secret(t.bot_token.get_secret_value())
        ch = TelegramChannel(t.base_url, t.bot_token.get_secret_value(), t.chat_id, t.delivery.timeout_s)
        out.append((Courier(ch, t.delivery), policy(ch.name, t)))
    if e.host:
        pw = e.password.get_secret_value() if e.password is not None else None
        register_secret(pw)
        ch = EmailChannel(e.host, e.port, e.sender, e.to, e.security, e.username, pw, e.delivery.timeout_s)
        out.append((Courier(ch, e.delivery), policy(ch.name, e)))
    return out


class Watcher:
    def __init__(self, cfg: Config, sect: AlertsConfig, clock):
        self.cfg, self.sect, self.clock = cfg, sect, clock
        session = SessionCalendar.from_config(cfg.trading)
        self.rules = Rules(sect, cfg.risk.max_daily_loss_cents, session, time.time_ns())
        pairs = build_couriers(sect)
        self.couriers = {c.channel.name: c for c, _ in pairs}
        q = sect.quiet_hours
        self.router = Router([p for _, p in pairs], Dedup(sect.dedup_window_s, cfg.path(cfg.logging.dir) / "state" / "alerts_sent.json"),
                             QuietHours(q.start, q.end, q.timezone) if q else None,
                             q.min_severity if q else "CRITICAL")
        self.metrics = MetricsState(list(sect.services), stale_s=max(3.0, cfg.risk.silent_service_s))
        self.metrics.extra["alerts"] = self._alert_metrics
        self.raised: dict[str, int] = {}
        self.subs: list[Subscriber] = []
        self.http = None
        self.supervisor: SupervisorWatch | None = None

    # -- setup -----------------------------------------------------------------------
    def publishers(self) -> list[tuple[str, str, str | None]]:
        bus = self.cfg.bus.model_dump()
        return [(k[:-len("_pub")], v, bus.get(k[:-len("_pub")] + "_snap"))
                for k, v in bus.items() if k.endswith("_pub") and isinstance(v, str)]

    def start_metrics(self) -> None:
        if self.sect.metrics_port is None:
            return
        registry = CollectorRegistry(auto_describe=False)
        registry.register(Collector(self.metrics))
        self.http = start_http_server(self.sect.metrics_port, addr=self.sect.metrics_host, registry=registry)
        logger.info(f"ALERT: Prometheus metrics on http://{self.sect.metrics_host}:{self.sect.metrics_port}/metrics")

    def run(self) -> int:
        loop = ServiceLoop(SERVICE)
        try:
            self.start_metrics()
        except OSError as exc:
            logger.error(f"ALERT: refusing to start: cannot serve metrics on {self.sect.metrics_host}:"
                         f"{self.sect.metrics_port}: {exc.strerror or exc} (alerts.metrics_port)")
            return 2
        for name, pub, snap in self.publishers():
            s = Subscriber(SERVICE, pub, snap, topics=TOPICS)
            self.subs.append(s)
            loop.add_reader(s.sock, lambda s=s: self.on_bus(s))
        for c in self.couriers.values():
            c.start()
        if self.sect.supervisor_socket:
            def states(st: dict[str, str]) -> None:
                loop.call_soon_threadsafe(lambda: setattr(self.rules, "supervisor", st))
            self.supervisor = SupervisorWatch(self.cfg.path(self.sect.supervisor_socket), states).start()
        names = ", ".join(self.couriers) or "none (alerts go to the log only; see README 'Alerts')"
        logger.info(f"ALERT: watching {len(self.subs)} publishers; channels: {names}")
        loop.every(0.25, self.tick, first_in=0.25)
        loop.on_shutdown(self.shutdown)
        loop.run()
        return 0

    # -- bus ----------------------------------------------------------------------------
    def on_bus(self, sub: Subscriber) -> None:
        now = time.time_ns()
        for env in sub.drain():
            msg = env.msg
            if isinstance(msg, Heartbeat):
                self.metrics.observe(msg)
                if isinstance(self.clock, EventClock) and msg.exch_ns > 0 and not env.snapshot:
                    self.clock.advance(msg.exch_ns)
                self.emit(self.rules.on_heartbeat(msg, now), now)
            elif isinstance(msg, RiskEvent):
                self.emit(self.rules.on_risk(env.src, msg, now, env.snapshot, self.clock.now_ns()), now)
            elif isinstance(msg, Position):
                self.emit(self.rules.on_position(msg, now), now)
            elif isinstance(msg, Account):
                self.emit(self.rules.on_account(msg, now), now)
            elif isinstance(msg, RoundTrip) and not env.snapshot:
                self.rules.on_round_trip(msg)

    def tick(self) -> None:
        now = time.time_ns()
        self.emit(self.rules.tick(now, self.clock.now_ns()), now)
        self.deliver(self.router.tick(now))

    def emit(self, alerts: list[Alert], now: int) -> None:
        for a in alerts:
            self.raised[a.severity] = self.raised.get(a.severity, 0) + 1
            logger.log(LOG_LEVEL[a.severity], f"ALERT: {a.line()}")
            self.deliver(self.router.route(a, now))

    def deliver(self, routed: list[tuple[str, Alert]]) -> None:
        for name, alert in routed:
            self.couriers[name].submit(alert)

    # -- metrics about alerting itself ------------------------------------------------------
    def _alert_metrics(self):
        raised = CounterMetricFamily("scalper_alerts_raised", "alerts raised by the rules", labels=["severity"])
        for sev, n in sorted(self.raised.items()):
            raised.add_metric([sev], float(n))
        sent = CounterMetricFamily("scalper_alerts_delivered", "alerts a channel accepted", labels=["channel"])
        lost = CounterMetricFamily("scalper_alerts_lost", "alerts given up after every retry", labels=["channel"])
        fails = CounterMetricFamily("scalper_alerts_failed_attempts", "delivery attempts that failed",
                                    labels=["channel"])
        queued = GaugeMetricFamily("scalper_alerts_queued", "alerts waiting for delivery", labels=["channel"])
        for name, c in sorted(self.couriers.items()):
            sent.add_metric([name], float(c.stats.sent))
            lost.add_metric([name], float(c.stats.lost + c.stats.dropped))
            fails.add_metric([name], float(c.stats.failed_attempts))
            queued.add_metric([name], float(c.pending()))
        st = self.router.stats
        held = CounterMetricFamily("scalper_alerts_suppressed", "alerts deduplicated or held for a digest",
                                   labels=["reason"])
        for reason, n in (("duplicate", st.deduplicated), ("same_fact", self.rules.corroborated),
                          ("rate_limit", st.rate_held), ("quiet_hours", st.quiet_held)):
            held.add_metric([reason], float(n))
        return [raised, sent, lost, fails, queued, held]

    def shutdown(self) -> None:
        if self.supervisor is not None:
            self.supervisor.stop()
        self.deliver(self.router.flush(time.time_ns()))      # nothing held is kept back at the end
        for c in self.couriers.values():
            c.stop(3.0)
        for s in self.subs:
            s.close()
        if self.http is not None:
            try:
                self.http[0].shutdown()
            except Exception:
                pass
