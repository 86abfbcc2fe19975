"""The `positions:` section of the YAML. Every field has a default; endpoints come from `bus:`,
the log directory from `logging:`, the starting balance from `risk.starting_capital`."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class PositionsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    reconcile_s: float = Field(5.0, gt=0)        # periodic check against Position/searchOpen, Trade/search, Account/search
    recheck_s: float = Field(1.0, gt=0)          # a periodic check that saw a disagreement looks again this soon
    heartbeat_s: float = Field(1.0, gt=0)
    trades_lookback_h: float = Field(72, gt=0)   # Trade/search window when the trading day is not known yet
    fees: Literal["broker", "table"] = "broker"  # broker: the fill's fees (table when 0); table: instrument table
    report_on_shutdown: bool = True
    rate_share: float = Field(0.3, gt=0, le=1)   # part of the account's REST budget (the gateway has 0.65)
    service_heartbeats: bool = True              # gather latency figures from the other services' heartbeats
