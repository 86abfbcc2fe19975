"""The `inference:` section of the YAML. Every field has a default; the model paths and the
ATR period come from the shared `model:` and `risk:` sections."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class InferenceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    contract: str | None = None          # None: trading.contract
    max_gap_s: int = Field(300, gt=0)    # longer gaps without data are not filled with flat bars
    heartbeat_s: float = Field(1.0, gt=0)
    publish_minute_bars: bool = True     # 1-minute bars (interval_s=60) for the risk manager's ATR
