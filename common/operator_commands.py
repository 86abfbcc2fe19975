"""Operator commands (halt, resume, flatten) sent the way `scalper halt|resume|flatten` sends
them: an OperatorCommand to the engine and an OrderCommand to the order gateway, each a
single REQ with a timeout. Both get it, so a halt or flatten still works when one is down.

Used by `scalper halt|resume|flatten` (services/cli/commands.py) and by the dashboard's buttons.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from common.config import Config

ACTIONS = ("halt", "resume", "flatten")


@dataclass(frozen=True)
class Answer:
    target: str          # engine | gateway
    answered: bool
    ok: bool
    message: str = ""
    pending_key: str = ""  # the gateway answered `accepted`: the outcome follows on its PUB socket

    def line(self) -> str:
        what = ("accepted" if self.pending_key else "ok" if self.ok else
                "no answer" if not self.answered else "refused")
        return (f"{self.target + ':':<9}{what}{' - ' + self.message if self.message else ''}"
                f"{' (key ' + self.pending_key + '; see scalper status)' if self.pending_key else ''}")


def request(endpoint: str, msg, timeout_ms: int = 1500, name: str = "operator"):
    """One REQ with a timeout and no resend: the answer's message, or None when nobody answered."""
    from common.bus import LazyPirateClient, ServiceUnavailable
    client = LazyPirateClient(name, endpoint, timeout_ms=timeout_ms, retries=0)
    try:
        return client.request(msg).msg
    except ServiceUnavailable:
        return None
    finally:
        client.close()


def send(cfg: Config, action: str, reason: str = "", timeout_ms: int = 5000) -> list[Answer]:
    """Blocking: ask the engine, then the gateway. Raises ValueError on an unknown action."""
    from common.messages import OperatorCommand, OrderCommand
    if action not in ACTIONS:
        raise ValueError(f"unknown operator action {action!r}; known: {', '.join(ACTIONS)}")
    reason = reason or f"operator {action}"
    out = []
    eng = request(cfg.bus.engine_cmd, OperatorCommand(action, reason=reason, key=f"op-{time.time_ns()}"),
                   min(timeout_ms, 1500))
    out.append(Answer("engine", eng is not None, bool(eng is not None and eng.ok), getattr(eng, "message", "") or ""))
    gw = request(cfg.bus.orders_cmd, OrderCommand(key=f"op-{action}-{time.time_ns()}", action=action, reason=reason),
                  timeout_ms)
    pending = gw is not None and gw.status == "accepted" and gw.detail.get("pending")
    out.append(Answer("gateway", gw is not None, bool(gw is not None and gw.ok), getattr(gw, "message", "") or "",
                      str(gw.detail.get("key", gw.key)) if pending else ""))
    return out
