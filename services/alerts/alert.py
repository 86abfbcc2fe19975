"""What an alert is: a kind, a severity, one title line and a short text, plus the fields a
webhook consumer may want. Channels render it; nothing here knows about sockets."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SEVERITIES = ("INFO", "WARNING", "ERROR", "CRITICAL")
RANK = {s: i for i, s in enumerate(SEVERITIES)}
ICON = {"INFO": "ℹ️", "WARNING": "⚠️", "ERROR": "🛑", "CRITICAL": "🚨"}


def rank(severity: str) -> int:
    """Order of a severity; an unknown one (a publisher's typo) counts as WARNING, not as noise."""
    return RANK.get(str(severity).upper(), RANK["WARNING"])


def norm_severity(severity: str) -> str:
    s = str(severity).upper()
    return s if s in RANK else "WARNING"


@dataclass(slots=True)
class Alert:
    kind: str                   # risk event kind, or service_silent, hub_outage, eod_summary, ...
    severity: str               # INFO, WARNING, ERROR, CRITICAL
    title: str                  # one line a trader reads on a lock screen
    text: str = ""
    key: str = ""               # deduplication key (default: kind)
    src: str = ""               # the service the news is about
    resolved: bool = False      # a clear: the condition this kind reported is over
    ts_ns: int = 0              # wall clock when raised
    data: dict[str, Any] = field(default_factory=dict)
    held: int = 0               # alerts folded into this one (a digest)

    def __post_init__(self) -> None:
        self.severity = norm_severity(self.severity)
        if not self.key:
            self.key = self.kind

    def line(self) -> str:
        """Title and text on one line: the log line and the digest entry."""
        head = f"[{self.severity}] {'RESOLVED: ' if self.resolved else ''}{self.title}"
        text = "; ".join(l.strip() for l in self.text.splitlines() if l.strip())   # one log line
        return f"{head}: {text}" if text else head

    def body(self) -> str:
        """Plain text for a chat message or an e-mail body."""
        head = f"{ICON[self.severity]} {self.severity}{' resolved' if self.resolved else ''}: {self.title}"
        return f"{head}\n{self.text}" if self.text else head

    def payload(self) -> dict[str, Any]:
        """The generic JSON webhook body: Slack reads `text`, Discord reads `content`, a custom
        receiver reads the structured fields."""
        text = self.body()
        return {"text": text, "content": text[:2000], "kind": self.kind, "severity": self.severity,
                "title": self.title, "detail": self.text, "service": self.src, "resolved": self.resolved,
                "ts_ns": self.ts_ns, "held": self.held, "data": self.data}


def digest(alerts: list[Alert], why: str, ts_ns: int, max_lines: int = 20) -> Alert:
    """Many held alerts as one message, most severe severity, in the order they happened."""
    worst = max(alerts, key=lambda a: rank(a.severity)).severity
    lines = [f"- {a.line()}" for a in alerts[:max_lines]]
    if len(alerts) > max_lines:
        lines.append(f"- ... and {len(alerts) - max_lines} more (see the trading log)")
    return Alert("digest", worst, f"{len(alerts)} alert{'s' if len(alerts) != 1 else ''} held ({why})",
                 "\n".join(lines), key=f"digest:{ts_ns}", ts_ns=ts_ns, held=len(alerts),
                 data={"kinds": [a.kind for a in alerts]})
