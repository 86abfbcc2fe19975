"""The `engine:` section of the YAML. Every field has a default; the rule parameters
themselves live in the shared `model:`, `risk:`, `execution:` and `trading:` sections."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class EngineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    contract: str | None = None              # None: trading.contract
    heartbeat_s: float = Field(1.0, gt=0)
    tick_s: float = Field(0.2, gt=0)          # how often breakers and the end of day are checked
    bar_interval_s: int = Field(1, gt=0)      # predictions are made on bars of this length
    needed_services: list[str] = ["feed", "inference", "orders", "positions"]
    require_atr: bool = True                  # no entry until the ATR is warm (atr_ticks > 0)
    log_repeat_s: float = Field(30.0, gt=0)   # identical entry-block logs at most this often
    pending_timeout_s: float = Field(10.0, gt=0)   # an unconfirmed command: ask the gateway's status
    status_retry_s: float = Field(2.0, gt=0)  # gateway unreachable: ask its status again this often
    status_timeout_s: float = Field(1.0, gt=0)  # a status unanswered this long: the gateway's view is stale
    gateway_silent_s: float = Field(2.0, gt=0)  # no gateway heartbeat this long: its view is stale
    stale_command_timeout_ms: int = Field(250, gt=0)   # a command to a gateway whose view is stale: one try
    # a command to a gateway thought alive: it answers within ~0.15 s whatever the broker does,
    # so a hung gateway (SIGSTOP, a wedged loop) costs the engine's loop at most 2 x 1 s, not
    # bus.request_timeout_ms x (1 + bus.request_retries) = 10 s; a resend is safe (same key)
    command_timeout_ms: int = Field(1000, gt=0)
    command_retries: int = Field(1, ge=0)
    flatten_retry_s: float = Field(15.0, gt=0)  # still not flat this long after a flatten: send again
