"""The simulator's own config section (`sim:` in config/live_trading.yaml)."""
from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class SimConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(18080, ge=0, le=65535)
    data: str = "data/real/ESM8_2018-05-07_trades.csv.gz"
    speed: float = Field(10.0, ge=0)               # 1 = real time; 0 = as fast as clients keep up
    time_mode: Literal["now", "keep", "start_at"] = "start_at"
    start_at: str | None = None                    # New York local, e.g. "2026-11-23T15:40:00"
    start_offset_s: float = Field(0, ge=0)         # skip this much of the data
    loop: bool = True
    contract: str | None = None                    # None: trading.contract
    username: str = "demo"
    api_key: str | None = None                     # None: $TOPSTEPX_API_KEY or "sim-key"
    account_id: int = 26000001
    account_name: str = "SIM-COMBINE-1"
    starting_balance: Decimal = Field(Decimal(1000), gt=0)
    slippage_ticks: int = Field(0, ge=0)
    limit_fill: Literal["touch", "through"] = "touch"
    token_ttl_s: float = Field(86400, gt=0)
    ping_interval_s: float = Field(15, gt=0)       # SignalR KeepAliveInterval: a {"type":6} this often
    rate_limit_per_min: int = Field(200, gt=0)
    bars_rate_limit_per_30s: int = Field(50, gt=0)
    max_client_queue: int = Field(5000, gt=0)
    auto_oco_brackets: bool = False
    depth_levels: int = Field(10, gt=0, le=50)     # synthesized book levels per side (GatewayDepth)
    live_contracts: bool = False                   # Contract/* with live: true lists nothing (a practice account)
    max_order_size: int = Field(50, gt=0)          # Order/place size above this: refused (code 2)
    max_position_size: int = Field(50, gt=0)       # |position + same-side working orders| above this: refused
    # ASP.NET Core SignalR on Kestrel, with its real (hostile) defaults; tests shorten them.
    # README "Hub keep-alive, timeouts, tokens and TLS".
    client_timeout_s: float = Field(30, gt=0)      # ClientTimeoutInterval: nothing from the client -> close
    handshake_timeout_s: float = Field(15, gt=0)   # HandshakeTimeout: no SignalR handshake -> drop
    ws_keepalive_s: float = Field(120, ge=0)       # WebSocketOptions.KeepAliveInterval (0: off)
    ws_keepalive_timeout_s: float = Field(0, ge=0)  # 0: unsolicited Pongs; > 0: Pings, no Pong in time -> abort
    close_on_token_expiry: bool = True             # CloseOnAuthenticationExpiration
    tls_cert: str | None = None                    # PEM certificate chain: serve https:// and wss://
    tls_key: str | None = None                     # PEM private key for tls_cert
