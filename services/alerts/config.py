"""The `alerts:` section of the YAML. Every field has a default; a channel whose address is
not set (its ${VAR} unset) is off. Secrets (the webhook URL, which carries its token, the
Telegram bot token, the SMTP password) come from the environment and are SecretStr, so they
never print."""
from __future__ import annotations

from datetime import time
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from common.config import _hhmm

Severity = Literal["INFO", "WARNING", "ERROR", "CRITICAL"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RateLimitConfig(_Strict):
    """Token bucket per channel: `burst` at once, then `per_minute`. Alerts over it are held and
    sent together as one digest when the bucket refills: nothing is lost, the phone is spared."""
    burst: int = Field(5, gt=0)
    per_minute: float = Field(6, gt=0)


class DeliveryConfig(_Strict):
    timeout_s: float = Field(5.0, gt=0)
    attempts: int = Field(5, gt=0)          # then the alert is dropped, with an ERROR log line
    backoff_s: float = Field(1.0, gt=0)     # doubling between attempts, capped at backoff_max_s
    backoff_max_s: float = Field(60.0, gt=0)
    queue: int = Field(500, gt=0)           # alerts waiting per channel; the oldest go first when full


class ChannelBase(_Strict):
    min_severity: Severity = "WARNING"
    # kinds delivered whatever their severity (the end-of-day flatten result and summary are INFO)
    always: list[str] = ["eod_flatten", "eod_summary"]
    rate_limit: RateLimitConfig = RateLimitConfig()
    delivery: DeliveryConfig = DeliveryConfig()


class WebhookConfig(ChannelBase):
    """A JSON POST. `json` carries `text` (Slack) and `content` (Discord) plus the structured
    fields; `ntfy` posts ntfy's JSON (topic, title, message, priority) to the server's root URL."""
    url: SecretStr | None = None
    format: Literal["json", "ntfy"] = "json"
    topic: str | None = None                 # ntfy only

    @model_validator(mode="after")
    def _ntfy_needs_topic(self) -> "WebhookConfig":
        if self.url is not None and self.format == "ntfy" and not self.topic:
            raise ValueError("alerts.webhook.topic is not set: the ntfy format needs a topic")
        return self


class TelegramConfig(ChannelBase):
    base_url: str = "https://api.telegram.org"
    bot_token: SecretStr | None = None
    chat_id: str | None = None

    @field_validator("chat_id", mode="before")
    @classmethod
    def _chat_id_text(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int) else v


class EmailConfig(ChannelBase):
    min_severity: Severity = "ERROR"
    host: str | None = None
    port: int = Field(587, gt=0, lt=65536)
    security: Literal["starttls", "ssl", "none"] = "starttls"
    username: str | None = None
    password: SecretStr | None = None
    sender: str = "scalper@localhost"
    to: list[str] = []

    @field_validator("to", mode="before")
    @classmethod
    def _comma_list(cls, v: Any) -> Any:
        if v is None:
            return []
        if isinstance(v, str):
            return [a.strip() for a in v.split(",") if a.strip()]
        return v

    @model_validator(mode="after")
    def _host_needs_to(self) -> "EmailConfig":
        if self.host and not self.to:
            raise ValueError("alerts.email.to is empty: name at least one recipient (or unset alerts.email.host)")
        return self


class QuietHoursConfig(_Strict):
    """Wall-clock hours (in `timezone`) when only `min_severity` and above go out at once;
    the rest is held and sent as one digest when the quiet hours end."""
    start: time
    end: time
    timezone: str = "America/New_York"
    min_severity: Severity = "ERROR"

    @field_validator("start", "end", mode="before")
    @classmethod
    def _times(cls, v: Any) -> time:
        return _hhmm(v)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r}; expected an IANA name like America/New_York") from None
        return v


DEFAULT_SEVERITY = {
    # a position without its stop at the broker, a flatten that did not verify: wake the trader
    "unprotected": "CRITICAL",
    "protection_invariant": "CRITICAL",
    "flatten_failed": "CRITICAL",
    "daily_loss": "CRITICAL",
    "crash_loop*": "CRITICAL",
    "crashloop*": "CRITICAL",
}


class AlertsConfig(_Strict):
    # --- Prometheus exposition (loopback only: the metrics carry P&L) ---
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = Field(9464, gt=0, lt=65536)   # null: no endpoint
    # --- which services' heartbeats to watch ---
    services: list[str] = ["feed", "inference", "engine", "orders", "positions"]
    # --- rules ---
    service_silent_s: float = Field(10.0, gt=0)   # no heartbeat this long: "service silent"
    startup_grace_s: float = Field(60.0, ge=0)    # a service never heard from: silent only after this
    # supervisord's control socket (relative to the project root): a program supervisord stopped
    # on purpose (supervisorctl stop, the ordered shutdown) is not an outage. null: heartbeats only
    supervisor_socket: str | None = "run/supervisor.sock"
    hub_outage_s: float = Field(30.0, gt=0)       # market or user hub down this long: alert
    unprotected_s: float = Field(5.0, gt=0)       # an open position without a stop order this long
    loss_warn_fraction: float = Field(0.8, gt=0, le=1)   # day P&L this share of risk.max_daily_loss: warn
    eod_verify_s: float = Field(60.0, gt=0)       # not flat this long after the flatten time: CRITICAL
    summary_delay_s: float = Field(5.0, ge=0)     # after the EOD flatten, wait for the last round trip
    dedup_window_s: float = Field(300.0, ge=0)    # the same alert again within this: suppressed
    ignore: list[str] = ["entry_blocked:*", "orders_started", "end_of_day", "user_hub_down"]
    severity: dict[str, Severity] = DEFAULT_SEVERITY   # per risk-event kind (or pattern), over the publisher's
    quiet_hours: QuietHoursConfig | None = None
    # --- channels ---
    webhook: WebhookConfig = WebhookConfig()
    telegram: TelegramConfig = TelegramConfig()
    email: EmailConfig = EmailConfig()

    @field_validator("metrics_host")
    @classmethod
    def _loopback(cls, v: str) -> str:
        if not (v.startswith("127.") or v in ("localhost", "::1")):
            raise ValueError(f"metrics_host {v!r} is not loopback: the metrics carry P&L and positions; "
                             "put a reverse proxy with authentication in front to expose them")
        return v
