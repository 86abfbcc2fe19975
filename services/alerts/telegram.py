"""Telegram Bot API: sendMessage to one chat. The base URL is configurable, so a local
receiver stands in for api.telegram.org in tests; the bot token sits in the URL path and
never appears in an error."""
from __future__ import annotations

import requests

from services.alerts.alert import Alert, rank
from services.alerts.channel import DeliveryError, http_error


class TelegramChannel:
    name = "telegram"

    def __init__(self, base_url: str, bot_token: str, chat_id: str, timeout_s: float = 5.0):
        self.url = f"{base_url.rstrip('/')}/bot{bot_token}/sendMessage"
        self.chat_id, self.timeout_s = chat_id, timeout_s
        self.session = requests.Session()

    def body(self, alert: Alert) -> dict:
        # INFO arrives without a sound; everything else rings
        return {"chat_id": self.chat_id, "text": alert.body()[:4096],
                "disable_notification": rank(alert.severity) < rank("WARNING")}

    def send(self, alert: Alert) -> None:
        try:
            r = self.session.post(self.url, json=self.body(alert), timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise DeliveryError(f"{type(exc).__name__} (Telegram API unreachable or too slow)") from None
        try:
            data = r.json()
        except ValueError:
            data = {}
        if r.status_code == 429:
            raise http_error(429, (data.get("parameters") or {}).get("retry_after") if isinstance(data, dict) else None)
        if not 200 <= r.status_code < 300:
            err = http_error(r.status_code)
            desc = data.get("description") if isinstance(data, dict) else None
            raise DeliveryError(f"{err} {desc or ''}".strip(), retry=err.retry)
        if not (isinstance(data, dict) and data.get("ok") is True):
            raise DeliveryError("Telegram answered without ok=true")
