"""Configuration: YAML with ${VAR} expansion, validated once at start.

A bad value stops the service with one line that names the key, the value and
what is expected, e.g.

    config error (config/live_trading.yaml): risk.max_daily_loss = -5: must be greater than 0

Shared sections (api, trading, model, risk, execution, bus, logging) live here.
Each service keeps its own section model in services/<name>/config.py and reads
it with `Config.section(name, Model)`; every field there has a default.
"""
from __future__ import annotations

import os
import re
from datetime import datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from common.instruments import INSTRUMENTS, InstrumentError, parse_contract_id

DEFAULT_PATH = "config/live_trading.yaml"
ROOT = Path(__file__).resolve().parent.parent

M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """One line a trader can act on: file, key, value, what is expected."""


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(value: Any, env: dict[str, str] | None = None) -> Any:
    """Replace ${VAR} and ${VAR:-default} in every string; an unset VAR without default -> None
    when it is the whole value, '' inside a longer string."""
    env = os.environ if env is None else env
    if isinstance(value, dict):
        return {k: expand_env(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, env) for v in value]
    if not isinstance(value, str):
        return value
    whole = _VAR.fullmatch(value.strip())
    if whole:
        name, default = whole.group(1), whole.group(2)
        got = env.get(name)
        if got is None or got == "":
            return default
        return got

    def sub(m: re.Match) -> str:
        got = env.get(m.group(1))
        return got if got else (m.group(2) or "")
    return _VAR.sub(sub, value)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _hhmm(v: Any) -> time:
    if isinstance(v, time):
        return v
    if isinstance(v, int):  # YAML 1.1 reads 09:30 as sexagesimal 570
        return time(v // 60, v % 60)
    if isinstance(v, str):
        try:
            return datetime.strptime(v.strip(), "%H:%M").time()
        except ValueError:
            pass
    raise ValueError(f"expected a New York time as \"HH:MM\", got {v!r}")


class ApiConfig(_Section):
    mode: Literal["sim", "live"] = "sim"
    base_url: str = "http://127.0.0.1:18080"
    market_hub_url: str = "http://127.0.0.1:18080/hubs/market"
    user_hub_url: str = "http://127.0.0.1:18080/hubs/user"
    username: str | None = "demo"
    api_key: SecretStr | None = None
    account_id: int | None = None
    account_name: str | None = None
    request_timeout_s: float = Field(5.0, gt=0)
    order_timeout_s: float = Field(3.0, gt=0)
    rate_limit_per_min: int = Field(200, gt=0)
    bars_rate_limit_per_30s: int = Field(50, gt=0)
    # SignalR hub clients (common/topstepx/hub.py): a ping when nothing was sent this long (the
    # server closes a client silent for 30 s); a hub silent this long is rebuilt (twice the
    # server's 15 s keep-alive); a reconnect with a fresh token this long before it expires
    hub_keep_alive_s: float = Field(10.0, gt=0)
    hub_server_timeout_s: float = Field(30.0, gt=0)
    hub_token_refresh_margin_s: float = Field(120.0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _ws_url_alias(cls, data: Any) -> Any:
        # the spec's config calls the market hub `ws_url`
        if isinstance(data, dict) and "ws_url" in data:
            data = dict(data)
            data.setdefault("market_hub_url", data.pop("ws_url"))
        return data

    @model_validator(mode="after")
    def _hub_keep_alive_below_timeout(self) -> "ApiConfig":
        if self.hub_keep_alive_s >= self.hub_server_timeout_s:
            raise ValueError(f"api.hub_keep_alive_s ({self.hub_keep_alive_s:g}) must be below "
                             f"api.hub_server_timeout_s ({self.hub_server_timeout_s:g})")
        return self

    @model_validator(mode="after")
    def _live_needs_credentials(self) -> "ApiConfig":
        if self.mode == "live":
            if self.account_id is None:
                raise ValueError("api.account_id is not set: export TOPSTEPX_ACCOUNT_ID (required in live mode)")
            if not self.username:
                raise ValueError("api.username is not set: export TOPSTEPX_USERNAME (required in live mode)")
            if self.api_key is None or not self.api_key.get_secret_value():
                raise ValueError("api.api_key is not set: export TOPSTEPX_API_KEY (required in live mode)")
            if "127.0.0.1" in self.base_url or "localhost" in self.base_url:
                raise ValueError(f"api.base_url = {self.base_url}: live mode points at the local simulator; "
                                 "use https://api.topstepx.com")
        return self


class TradingConfig(_Section):
    contract: str = "MES"                               # a symbol: the front month, resolved at start (common/service.py)
    session_start: time = time(9, 30)
    session_end: time = time(16, 30)
    flatten_time: time = time(16, 25)
    no_new_entries_minutes: float = Field(10, ge=0)
    broker_flat_by: time = time(16, 10)
    calendar: str | None = "CMES"
    clock: Literal["live", "event"] = "event"          # unset in the YAML: follows api.mode (Config._clock_follows_mode)
    # live mode refuses a flatten_time after broker_flat_by unless this is set (Topstep: flat by 16:10 NY)
    allow_flatten_after_broker_flat_by: bool = False
    expiry_warning_days: int = Field(5, ge=0)         # warn this many trading days before the contract expires

    @field_validator("session_start", "session_end", "flatten_time", "broker_flat_by", mode="before")
    @classmethod
    def _times(cls, v: Any) -> time:
        return _hhmm(v)

    @field_validator("contract")
    @classmethod
    def _known_contract(cls, v: str) -> str:
        if v in INSTRUMENTS:      # a symbol (MES): resolved at start to the front month (common/contracts.py)
            return v
        try:
            parse_contract_id(v)
        except InstrumentError as exc:
            raise ValueError(str(exc)) from None
        return v

    @model_validator(mode="after")
    def _times_in_order(self) -> "TradingConfig":
        if not self.session_start < self.session_end:
            raise ValueError(f"trading.session_end = {self.session_end:%H:%M} must be after "
                             f"trading.session_start = {self.session_start:%H:%M}")
        if not self.session_start < self.flatten_time <= self.session_end:
            raise ValueError(f"trading.flatten_time = {self.flatten_time:%H:%M} is outside the session "
                             f"{self.session_start:%H:%M}-{self.session_end:%H:%M}")
        return self


class ModelConfig(_Section):
    path: str = "models/registry/scalper_demo-20261130-a5c74a2a/model.onnx"
    config: str = "models/registry/scalper_demo-20261130-a5c74a2a/config.json"
    min_confidence: float = Field(0.65, ge=0, le=1)
    reverse_confidence: float = Field(0.75, ge=0, le=1)
    max_prediction_age_s: float = Field(3.0, gt=0)
    max_inference_ms: float = Field(10.0, gt=0)
    max_feature_ms: float = Field(5.0, gt=0)
    max_holding_s: float = Field(900, gt=0)
    # model lifecycle (services/modelctl): range gate policy, the live edge check, shadow model
    range_policy: Literal["block", "flag"] = "block"   # out-of-range inputs: block entries, or only flag them
    allow_unproven_model: bool = False    # live mode runs a model without a positive walk-forward EV only if true
    demo_threshold: bool = False          # min_confidence is a demo value below the model's validated threshold
    shadow_path: str | None = None        # a second model scored beside the trading one, never traded
    shadow_config: str | None = None


class RiskConfig(_Section):
    starting_capital: Decimal = Field(Decimal(1000), gt=0)
    max_daily_loss: Decimal = Field(Decimal(50), gt=0)
    max_risk_per_trade: float = Field(0.025, gt=0, le=1)
    max_consecutive_losses: int = Field(5, gt=0)
    min_balance: Decimal | None = Field(None, ge=0)
    max_trailing_drawdown: Decimal | None = Field(None, gt=0)
    max_contracts: int = Field(2, gt=0)
    stop_atr_multiple: float = Field(1.5, gt=0)
    atr_period: int = Field(14, gt=0)
    min_stop_ticks: int = Field(4, gt=0)
    max_stop_ticks: int = Field(40, gt=0)
    reward_risk: float = Field(1.5, gt=0)
    # circuit breakers
    stale_data_s: float = Field(5, gt=0)
    silent_service_s: float = Field(3, gt=0)
    reject_limit: int = Field(3, gt=0)
    reject_window_s: float = Field(60, gt=0)
    reject_cooldown_s: float = Field(300, ge=0)
    price_shock_atr: float = Field(4, gt=0)
    price_shock_cooldown_s: float = Field(60, ge=0)
    wide_spread_ticks: int = Field(4, gt=0)

    @model_validator(mode="after")
    def _stops_in_order(self) -> "RiskConfig":
        if self.min_stop_ticks > self.max_stop_ticks:
            raise ValueError(f"risk.min_stop_ticks = {self.min_stop_ticks} is above "
                             f"risk.max_stop_ticks = {self.max_stop_ticks}")
        return self

    @property
    def max_daily_loss_cents(self) -> int:
        return int(self.max_daily_loss * 100)

    @property
    def starting_capital_cents(self) -> int:
        return int(self.starting_capital * 100)

    @property
    def min_balance_cents(self) -> int | None:
        if self.min_balance is not None:
            return int(self.min_balance * 100)
        if self.max_trailing_drawdown is not None:
            return int((self.starting_capital - self.max_trailing_drawdown) * 100)
        return None


class ExecutionConfig(_Section):
    # the spec's key; entries are market orders (no limit-entry path exists), so "limit" is
    # refused at start rather than accepted and ignored
    order_type: Literal["market"] = "market"
    slippage_buffer_ticks: int = Field(1, ge=0)

    @field_validator("order_type", mode="before")
    @classmethod
    def _market_only(cls, v: object) -> object:
        if v != "market":
            raise ValueError("entries are market orders only (limit entries are not implemented); "
                             "a market entry is refused when the spread exceeds 1 + execution.slippage_buffer_ticks")
        return v


def _ep(port: int) -> str:
    return f"tcp://127.0.0.1:{port}"


class BusConfig(_Section):
    """Every socket of the pipeline. Loopback by default; see docs/architecture.md."""
    feed_pub: str = _ep(5550)
    feed_snap: str = _ep(5551)
    inference_pub: str = _ep(5552)
    inference_snap: str = _ep(5553)
    engine_pub: str = _ep(5554)
    engine_snap: str = _ep(5555)
    engine_cmd: str = _ep(5556)
    orders_cmd: str = _ep(5557)
    orders_pub: str = _ep(5558)
    orders_snap: str = _ep(5559)
    positions_pub: str = _ep(5560)
    positions_snap: str = _ep(5561)
    positions_query: str = _ep(5562)
    supervision_pub: str = _ep(5563)       # the supervisord event listener: crash loops, services down
    supervision_snap: str = _ep(5564)
    request_timeout_ms: int = Field(2500, gt=0)
    request_retries: int = Field(3, ge=0)

    @model_validator(mode="after")
    def _loopback_only(self) -> "BusConfig":
        for name, ep in self.model_dump().items():
            if not isinstance(ep, str):
                continue
            if not (ep.startswith("ipc://") or ep.startswith("inproc://")
                    or ep.startswith("tcp://127.") or ep.startswith("tcp://localhost:")):
                raise ValueError(f"bus.{name} = {ep}: only loopback tcp:// or ipc:// endpoints are allowed "
                                 "without CURVE keys (docs/architecture.md)")
        return self


class LoggingConfig(_Section):
    dir: str = "logs"
    level: Literal["TRACE", "DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    console: bool = True


class Config(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    api: ApiConfig = ApiConfig()
    trading: TradingConfig = TradingConfig()
    model: ModelConfig = ModelConfig()
    risk: RiskConfig = RiskConfig()
    execution: ExecutionConfig = ExecutionConfig()
    bus: BusConfig = BusConfig()
    logging: LoggingConfig = LoggingConfig()
    source: str = "<defaults>"

    @model_validator(mode="before")
    @classmethod
    def _clock_follows_mode(cls, data: Any) -> Any:
        """An unset trading.clock follows api.mode: live -> the wall clock, sim -> event time."""
        if isinstance(data, dict):
            api, trading = data.get("api"), data.get("trading")
            mode = api.get("mode") if isinstance(api, dict) else None
            if isinstance(trading, dict) and trading.get("clock") is None:
                data = {**data, "trading": {**trading, "clock": "live" if mode == "live" else "event"}}
            elif trading is None and mode == "live":
                data = {**data, "trading": {"clock": "live"}}
        return data

    @model_validator(mode="after")
    def _live_rules(self) -> "Config":
        """Live mode runs on the wall clock (an event clock stops with a dead feed, and with it
        the end-of-day flatten), and flattens before the broker's flat-by time."""
        t = self.trading
        if self.api.mode == "live" and t.clock != "live":
            raise ValueError(f"trading.clock = {t.clock}: api.mode live needs the wall clock; "
                             "set trading.clock: live (or leave it unset, or unset SCALPER_CLOCK)")
        if self.api.mode == "live" and t.flatten_time > t.broker_flat_by and not t.allow_flatten_after_broker_flat_by:
            raise ValueError(f"trading.flatten_time = {t.flatten_time:%H:%M} is after trading.broker_flat_by = "
                             f"{t.broker_flat_by:%H:%M} New York (Topstep: flat by 3:10 PM CT); move flatten_time "
                             "earlier, or set trading.allow_flatten_after_broker_flat_by: true to accept the risk")
        return self

    def section(self, name: str, model: type[M]) -> M:
        """A service's own section, validated with the same one-line errors."""
        raw = (self.model_extra or {}).get(name) or {}
        try:
            return model.model_validate(raw)
        except ValidationError as exc:
            raise ConfigError(_one_line(exc, self.source, prefix=name)) from None

    def path(self, rel: str) -> Path:
        """A path from the config, relative to the project root unless absolute."""
        p = Path(rel)
        return p if p.is_absolute() else ROOT / p

    def warnings(self) -> list[str]:
        out = []
        t = self.trading
        if t.flatten_time > t.broker_flat_by:
            out.append(f"trading.flatten_time {t.flatten_time:%H:%M} is after the broker's flat-by time "
                       f"{t.broker_flat_by:%H:%M} New York (Topstep: flat by 3:10 PM CT); "
                       "move flatten_time earlier for a Topstep account")
        return out


def _one_line(exc: ValidationError, source: str, prefix: str = "") -> str:
    err = exc.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in err["loc"] if p != "__root__")
    key = ".".join(p for p in (prefix, loc) if p)
    msg = err["msg"].removeprefix("Value error, ")
    more = f" (+{len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    val = err.get("input")
    if err["type"] in ("value_error", "assertion_error") and (not loc or isinstance(val, dict)):
        # a whole-section check: its message names the key and value; the section's raw
        # input is not printed (it would show every key of it, api_key included)
        return f"config error ({source}): {msg}{more}"
    shown = "<secret>" if "key" in key or "token" in key else repr(val)
    return f"config error ({source}): {key} = {shown}: {msg}{more}"


def load_config(path: str | os.PathLike | None = None, env: dict[str, str] | None = None,
                overrides: dict[str, Any] | None = None) -> Config:
    """Read, expand and validate. Raises ConfigError with one actionable line."""
    path = Path(path or os.environ.get("SCALPER_CONFIG") or ROOT / DEFAULT_PATH)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"config error: cannot read {path}: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config error ({path}{where}): not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config error ({path}): top level must be a mapping of sections")
    raw = expand_env(raw, env)
    for k, v in (overrides or {}).items():
        sect, _, key = k.partition(".")
        raw.setdefault(sect, {})
        raw[sect][key] = v
    raw["source"] = str(path)
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_one_line(exc, str(path))) from None


class HotPathConfig(_Section):
    """`hotpath:` — how every service process keeps its hot path short (common/hotpath.py)."""
    gc_freeze: bool = True                 # gc.freeze() once started: the start-up heap is never scanned again
    gc_on_idle: bool = True                # no automatic collections; the loop collects when it is idle
    gc_young_limit: int = Field(20_000, ge=700)   # collect even when busy past this many new objects
    gc_full_every_s: float = Field(300.0, gt=0)   # a full collection at most this often, when idle
    warm_before_ms: float = Field(2.0, ge=0, le=50)   # 0 = off: warm up and busy-poll from this long before
    warm_after_ms: float = Field(5.0, ge=0, le=50)    # ... each bar boundary until this long after the closing tick
    warm_max_ms: float = Field(50.0, ge=0, le=200)    # the worker waits for the closing tick at most this long past it
    warm_every_ms: float = Field(0.5, gt=0)   # the warm-up calls again this often inside the window
    bar_s: float = Field(1.0, gt=0)        # the bar length the boundary is a multiple of (wall clock)
    switch_interval_ms: float = Field(0.5, gt=0, le=5)  # GIL hand-over between threads (CPython default 5)
