"""The `replay:` section of the YAML. Every field has a default."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ReplayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # wait this long after binding before the first message, so subscribers are connected
    start_delay_s: float = Field(1.0, ge=0)
    # at --speed max: never more than this many messages per second, sent in bursts of
    # `burst` (flow control: with the bus HWM of 100k on both ends a subscriber that keeps
    # up on average loses nothing)
    max_rate: int = Field(50_000, gt=0)
    burst: int = Field(500, gt=0)
    # heartbeats: one per second of event time; in a longer silence at most this many,
    # then one just before the next record
    gap_heartbeats: int = Field(10, ge=1)
    # after the last message keep the sockets open this long so subscribers drain
    linger_s: float = Field(1.0, ge=0)
