"""The `dashboard:` section of the YAML. Every field has a default.

The page can halt and flatten the account, so it listens on loopback only. Binding any other
address must be asked for (`allow_remote: true`) and then needs a token of at least 16
characters, from the environment (`token: ${SCALPER_DASHBOARD_TOKEN}`), never from the file.
"""
from __future__ import annotations

import ipaddress

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

MIN_TOKEN = 16


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class DashboardConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(8765, ge=0, le=65535)        # 0: any free port (tests), logged at start
    allow_remote: bool = False                      # a non-loopback host is refused unless true
    token: SecretStr | None = None                  # required with allow_remote; optional on loopback
    push_s: float = Field(0.5, gt=0)                # the page gets a new state this often
    poll_ms: int = Field(50, gt=0)                  # the bus is drained this often
    stale_s: float = Field(3.0, gt=0)               # a heartbeat or quote older than this is shown stale
    bars: int = Field(1800, gt=0)                   # 1 s bars kept for the price chart
    recent: int = Field(50, gt=0)                   # signals, risk events, entries' latencies kept
    command_timeout_ms: int = Field(5000, gt=0)     # halt / resume / flatten: wait this long per service
    record: bool = True                             # one-minute bars, predictions, hops -> logs/session_DAY.jsonl

    @model_validator(mode="after")
    def _loopback_or_token(self) -> "DashboardConfig":
        if not is_loopback(self.host):
            if not self.allow_remote:
                raise ValueError(f"dashboard.host = {self.host}: not a loopback address; the page can halt and "
                                 "flatten the account, so set dashboard.allow_remote: true (and a token) to bind it")
            tok = self.token.get_secret_value() if self.token else ""
            if len(tok) < MIN_TOKEN:
                raise ValueError(f"dashboard.host = {self.host} with allow_remote needs dashboard.token of at "
                                 f"least {MIN_TOKEN} characters: export SCALPER_DASHBOARD_TOKEN")
        return self
