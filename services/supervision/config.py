"""The `supervision:` section of the YAML (the supervisord event listener)."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class SupervisionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_exits: int = Field(5, ge=1)           # this many exits of one program ...
    window_min: float = Field(10.0, gt=0)     # ... within this many minutes: stop restarting it
    heartbeat_s: float = Field(1.0, gt=0)
    # these going down while a position is open is an alert at once, whatever the count
    critical_with_position: list[str] = ["orders", "feed"]
    stop_timeout_s: float = Field(10.0, gt=0)  # how long to keep asking supervisord to stop a program
