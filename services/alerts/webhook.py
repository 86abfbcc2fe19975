"""Generic JSON webhook: Slack (`text`), Discord (`content`), ntfy (its JSON publish format),
or any receiver that reads the structured fields. The URL is a secret (it carries the token)
and never appears in an error."""
from __future__ import annotations

import requests

from services.alerts.alert import Alert
from services.alerts.channel import DeliveryError, http_error

NTFY_PRIORITY = {"INFO": 2, "WARNING": 3, "ERROR": 4, "CRITICAL": 5}


class WebhookChannel:
    name = "webhook"

    def __init__(self, url: str, fmt: str = "json", topic: str | None = None, timeout_s: float = 5.0):
        self.url, self.fmt, self.topic, self.timeout_s = url, fmt, topic, timeout_s
        self.session = requests.Session()

    def body(self, alert: Alert) -> dict:
        if self.fmt == "ntfy":
            return {"topic": self.topic, "title": ("RESOLVED: " if alert.resolved else "") + alert.title,
                    "message": alert.text or alert.title, "priority": NTFY_PRIORITY[alert.severity],
                    "tags": [alert.severity.lower(), alert.kind]}
        return alert.payload()

    def send(self, alert: Alert) -> None:
        try:
            r = self.session.post(self.url, json=self.body(alert), timeout=self.timeout_s)
        except requests.RequestException as exc:
            # the exception text holds the URL, hence the token: name the failure only
            raise DeliveryError(f"{type(exc).__name__} (receiver unreachable or too slow)") from None
        if not 200 <= r.status_code < 300:
            raise http_error(r.status_code, r.headers.get("Retry-After"))

