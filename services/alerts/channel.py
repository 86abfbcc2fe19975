"""What every delivery channel is: a name and a blocking `send(alert)` that raises
DeliveryError when the alert did not arrive. The courier calls it off the bus loop."""
from __future__ import annotations

from typing import Protocol

from services.alerts.alert import Alert


class DeliveryError(Exception):
    """The alert did not arrive. `retry` False: retrying cannot help (a 400, a bad token);
    `retry_after_s`: the receiver asked for a pause (HTTP 429). The text never holds a secret."""

    def __init__(self, text: str, retry: bool = True, retry_after_s: float | None = None):
        super().__init__(text)
        self.retry = retry
        self.retry_after_s = retry_after_s


class Channel(Protocol):
    name: str

    def send(self, alert: Alert) -> None: ...


def http_error(status: int, retry_after: str | float | None = None) -> DeliveryError:
    """An HTTP answer that is not 2xx, classified: 408/429/5xx are retried, other 4xx are not."""
    after = None
    try:
        after = float(retry_after) if retry_after is not None else None
    except (TypeError, ValueError):
        after = None
    transient = status in (408, 429) or status >= 500
    return DeliveryError(f"HTTP {status}", retry=transient, retry_after_s=after)
