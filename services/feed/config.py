"""The `feed:` section of the YAML. Every field has a default."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class FeedConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    contract: str | None = None                  # None: trading.contract
    # a feed silent for this long is dead: reconnect (only inside the session unless "always")
    stale_after_s: float = Field(10.0, gt=0)
    stale_check: Literal["session", "always", "never"] = "session"
    watchdog_s: float = Field(0.25, gt=0)        # the watchdog looks this often: trips within stale_after_s + this
    # reconnect with a fresh token this long before the JWT expires (capped at 1/4 of its lifetime)
    token_refresh_margin_s: float = Field(600.0, gt=0)
    connect_timeout_s: float = Field(10.0, gt=0)
    min_backoff_s: float = Field(0.25, gt=0)
    max_backoff_s: float = Field(30.0, gt=0)
    heartbeat_s: float = Field(1.0, gt=0)
    # heartbeat exch_ns = last exchange time + time since it arrived - this lag (never below the last)
    heartbeat_lag_ms: int = Field(250, ge=0)
    record: bool = True
    record_dir: str | None = None                # None: <logging.dir>/ticks
    # sanitiser (common/ticks/sanitize.py)
    cross_tolerance_ticks: int = Field(0, ge=0)
    jump_ticks: int = Field(200, gt=0)
    jump_confirm: int = Field(3, gt=0)
