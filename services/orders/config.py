"""The `orders:` section of the YAML. Every field has a default; the guard's limits come from
the shared `risk:` (max_contracts, max_daily_loss) and `trading:` (flatten_time) sections."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class OrdersConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    heartbeat_s: float = Field(1.0, gt=0)
    poll_s: float = Field(2.0, gt=0)              # REST reconciliation while something is in flight or the hub is down
    idle_poll_s: float = Field(5.0, gt=0)         # REST reconciliation otherwise (fills missed, P&L)
    guard_s: float = Field(1.0, gt=0)             # flatten-time / daily-loss timer
    lookup_timeout_s: float = Field(4.0, gt=0)    # an unknown placement must be found by tag within this
    unknown_flatten_s: float = Field(10.0, gt=0)  # an entry still unconfirmed after this is flattened
    flat_verify_s: float = Field(5.0, gt=0)       # wait this long for the broker to show flat after a close
    search_lookback_h: float = Field(24.0, gt=0)  # at most this far back; the window is the current session
    repair_stop_ticks: int = Field(8, gt=0)       # stop distance for a position with no known intent
    repair_target_ticks: int = Field(12, gt=0)
    state_dir: str | None = None                  # journal dir; None: <logging.dir>/state
    user_hub: bool = True                         # false: REST polling only
    hub_min_backoff_s: float = Field(0.25, gt=0)  # user hub reconnect backoff (doubling, jittered)
    hub_max_backoff_s: float = Field(2.0, gt=0)
    rate_share: float = Field(0.65, gt=0, le=1)   # part of the account's REST budget (the keeper has 0.3)
    rate_reserve: int = Field(20, ge=0)           # calls kept free for orders: a periodic poll waits below this
    protect_resend_s: float = Field(8.0, gt=0)    # a stop/target whose outcome is unknown: resend the same tag this long
    protect_attempts: int = Field(3, ge=1)        # a protective order is tried this often before closing instead
    broker_workers: int = Field(3, ge=2)          # threads for broker calls (one only for protection and exits)
    answer_within_s: float = Field(0.15, gt=0, le=0.25)   # a command not done by then is answered `accepted`
    native_brackets: Literal["auto", "off"] = "auto"   # auto: Auto-OCO brackets until the broker refuses them
    on_stop: Literal["auto", "flatten", "keep"] = "auto"   # SIGTERM: auto = flatten only when supervisord shuts down
    shared_budget: bool = True                    # draw REST calls from the account's shared ledger (kept across restarts)
    flat_rest_every_s: float = Field(1.0, gt=0)   # waiting for flat: the hub is watched, REST asked this often
