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


class FeedSanitizerKeys(BaseModel):
    """The `feed:` section's sanitiser keys. Replay cleans ticks exactly as the live feed
    does, so it reads them from the feed's section (the feed's other keys, about the live
    connection, are ignored here). The defaults match services/feed/config.py."""
    model_config = ConfigDict(extra="ignore", frozen=True)

    cross_tolerance_ticks: int = Field(0, ge=0)
    jump_ticks: int = Field(200, gt=0)
    jump_confirm: int = Field(3, gt=0)
