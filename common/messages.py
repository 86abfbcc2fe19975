"""Every message that crosses a socket, and the one codec that puts it on the wire.

A frame is a msgpack map: the envelope (type, schema version, per-stream sequence
number, event time in ns, sending service, publisher epoch, hop timestamps) and
the message body. Bodies are typed dataclasses; decoding checks every field so a
malformed frame is rejected with a DecodeError that says what was wrong, and
never reaches business logic half-built.

Units: prices are integer ticks (`*_ticks`), money is integer cents (`*_cents`),
times are integer nanoseconds since the epoch, UTC (`*_ns`).
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

import msgpack
import msgspec

SCHEMA_VERSION = 1


class DecodeError(ValueError):
    """A frame that is not a valid message: the text says which part is wrong."""


# --------------------------------------------------------------------------
# market data (feed, replay)
# --------------------------------------------------------------------------

# Tick quality flags set by the feed's sanitiser (bit mask).
FLAG_REPAIRED = 1        # a field was repaired by a documented rule
FLAG_SUSPECT = 2         # kept but suspicious (e.g. large jump): consumers may ignore


@dataclass(slots=True)
class Quote:
    contract: str
    bid_ticks: int
    ask_ticks: int
    last_ticks: int
    exch_ns: int
    recv_ns: int
    flags: int = 0


@dataclass(slots=True)
class Trade:
    contract: str
    price_ticks: int
    size: int
    aggressor: int  # +1 buyer lifted the ask, -1 seller hit the bid, 0 unknown
    exch_ns: int
    recv_ns: int
    flags: int = 0


@dataclass(slots=True)
class FeedStatus:
    """Connection state of the market feed: connecting, subscribed, reconnecting, stale, down."""
    state: str
    detail: str = ""


# --------------------------------------------------------------------------
# bars and predictions (feature/inference worker)
# --------------------------------------------------------------------------

@dataclass(slots=True)
class Bar:
    contract: str
    interval_s: int
    start_ns: int
    open_ticks: int
    high_ticks: int
    low_ticks: int
    close_ticks: int
    volume: int
    buy_volume: int
    sell_volume: int
    trades: int
    bid_ticks: int
    ask_ticks: int


@dataclass(slots=True)
class Prediction:
    contract: str
    bar_start_ns: int
    direction: int          # -1, 0, +1
    confidence: float       # probability of the predicted class
    probs: list[float]      # class probabilities in the model config's class order
    model_version: str
    close_ticks: int
    atr_ticks: float        # ATR of the last N one-minute bars, in ticks (0.0 until warm)
    spread_ticks: int
    feature_us: float
    inference_us: float
    features_in_range: bool = True
    out_of_range: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------
# decisions (signal + risk engine)
# --------------------------------------------------------------------------

SIGNAL_KINDS = (
    "LONG_ENTRY", "SHORT_ENTRY", "EXIT_LONG", "EXIT_SHORT",
    "REVERSE_TO_LONG", "REVERSE_TO_SHORT", "FLATTEN",
)


@dataclass(slots=True)
class Signal:
    signal_id: str
    kind: str
    contract: str
    confidence: float
    price_ticks: int
    model_version: str
    reason: str = ""


@dataclass(slots=True)
class RiskEvent:
    """A breaker or rule tripping (active=True) or clearing (active=False)."""
    kind: str
    active: bool
    severity: str = "WARNING"   # INFO, WARNING, ERROR
    detail: str = ""


# --------------------------------------------------------------------------
# orders (order gateway)
# --------------------------------------------------------------------------

ORDER_ACTIONS = ("enter", "exit", "reverse", "flatten", "cancel_all", "status", "halt", "resume")


@dataclass(slots=True)
class OrderCommand:
    """A request to the order gateway. `key` is the idempotency key (the signal id)."""
    key: str
    action: str
    contract: str = ""
    direction: int = 0          # +1 long, -1 short (enter/reverse)
    size: int = 0
    stop_ticks: int = 0         # stop distance from the fill, in ticks
    target_ticks: int = 0       # target distance from the fill, in ticks
    signal_id: str = ""
    model_version: str = ""
    reason: str = ""


@dataclass(slots=True)
class OrderReply:
    key: str
    ok: bool
    status: str                 # accepted, filled, rejected, duplicate, halted, error, ...
    message: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class OrderEvent:
    """The broker's view of one order, each time it changes."""
    order_id: int
    tag: str                    # the broker customTag
    contract: str
    leg: str                    # entry, stop, target, exit, flatten, unknown
    side: int                   # 0 buy, 1 sell (broker OrderSide)
    order_type: int             # broker OrderType
    size: int
    status: int                 # broker OrderStatus
    limit_ticks: int | None = None
    stop_ticks: int | None = None
    fill_volume: int = 0
    filled_price: str = ""      # decimal string; an average may be off the tick grid
    intent_key: str = ""        # the command's idempotency key this order serves
    signal_id: str = ""


@dataclass(slots=True)
class Fill:
    """One broker half-turn trade, de-duplicated by trade id."""
    trade_id: int
    order_id: int
    contract: str
    leg: str
    side: int                   # 0 buy, 1 sell
    size: int
    price_ticks: int
    fees_cents: int
    pnl_cents: int | None       # broker's realized P&L; None on an opening fill
    exch_ns: int
    intent_key: str = ""
    signal_id: str = ""
    model_version: str = ""


# --------------------------------------------------------------------------
# positions and account (position keeper)
# --------------------------------------------------------------------------

@dataclass(slots=True)
class Position:
    contract: str
    direction: int              # +1 long, -1 short, 0 flat
    size: int
    avg_price: str              # decimal string (scale-ins average off the grid)
    entry_ns: int = 0
    stop_ticks: int | None = None
    target_ticks: int | None = None
    stop_order_id: int | None = None
    target_order_id: int | None = None
    mark_ticks: int | None = None
    unrealized_cents: int = 0
    signal_id: str = ""
    model_version: str = ""


@dataclass(slots=True)
class Account:
    account_id: int
    balance_cents: int
    trading_day: str            # YYYY-MM-DD, New York
    realized_day_cents: int = 0  # net of fees
    unrealized_cents: int = 0
    fees_day_cents: int = 0
    consecutive_losses: int = 0
    trades_today: int = 0
    high_water_cents: int = 0   # highest end-of-day balance (trailing drawdown)
    can_trade: bool = True


@dataclass(slots=True)
class RoundTrip:
    """A closed trade, as journaled by the position keeper."""
    contract: str
    direction: int
    size: int
    entry_price: str
    exit_price: str
    entry_ns: int
    exit_ns: int
    ticks: int                  # per contract, signed in the trade's favour
    pnl_cents: int              # net of fees
    fees_cents: int
    exit_reason: str            # target, stop, signal, eod, flatten, ...
    signal_id: str = ""
    model_version: str = ""


# --------------------------------------------------------------------------
# service plumbing
# --------------------------------------------------------------------------

@dataclass(slots=True)
class Heartbeat:
    service: str
    state: str                  # ok, degraded, halted, starting, stopping
    pid: int
    uptime_s: float
    exch_ns: int = 0            # latest exchange time this service has seen (0: none)
    stats: dict[str, Any] = field(default_factory=dict)
    # last sequence number per topic sent before this heartbeat (filled in by the Publisher):
    # a subscriber sees a message lost at the end of a burst here, not at the next message
    seqs: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class SnapshotRequest:
    """Clone pattern: ask a publisher for the current state of some topics ('' = all)."""
    topics: list[str] = field(default_factory=list)


@dataclass(slots=True)
class SnapshotReply:
    epoch: int
    seqs: dict[str, int]        # topic -> last sequence number published
    frames: list[bytes]         # retained messages, encoded, in publication order


@dataclass(slots=True)
class OperatorCommand:
    """From the operator CLI: halt, resume, flatten, status."""
    action: str
    reason: str = ""
    key: str = ""


@dataclass(slots=True)
class Query:
    """A read-only question to a service's REP socket (position keeper, gateway)."""
    what: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Reply:
    """Generic answer to an OperatorCommand or Query; ok=False carries the error."""
    ok: bool
    message: str = ""
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class ShadowPrediction:
    """A shadow model's call on the same bar and features as the trading model: published and
    logged, never traded (the engine does not subscribe to it). Carries the trading model's call
    and the book, so agreement and would-be P&L can be computed afterwards."""
    contract: str
    bar_start_ns: int
    direction: int
    confidence: float
    probs: list[float]
    model_version: str
    primary_version: str
    primary_direction: int
    primary_confidence: float
    close_ticks: int
    bid_ticks: int
    ask_ticks: int
    atr_ticks: float
    features_in_range: bool = True
    primary_in_range: bool = True


MESSAGE_TYPES: tuple[type, ...] = (
    Quote, Trade, FeedStatus, Bar, Prediction, Signal, RiskEvent,
    OrderCommand, OrderReply, OrderEvent, Fill, Position, Account, RoundTrip,
    Heartbeat, SnapshotRequest, SnapshotReply, OperatorCommand, Query, Reply,
    ShadowPrediction,
)
REGISTRY: dict[str, type] = {cls.__name__: cls for cls in MESSAGE_TYPES}
_TOPICS: dict[type, bytes] = {cls: cls.__name__.encode() for cls in MESSAGE_TYPES}   # a message's topic, per publish


# --------------------------------------------------------------------------
# envelope and codec
# --------------------------------------------------------------------------

class Envelope(msgspec.Struct):
    """A decoded frame: the message and its envelope fields. Not on the wire (that is the frame map
    encode writes). A msgspec Struct, not a dataclass, because every decode builds one: built in C
    it costs a third of the dataclass's Python __init__, warm and with cold caches (the live cadence)."""
    msg: Any
    seq: int
    ts_ns: int
    src: str
    epoch: int = 0
    hops: dict[str, int] = msgspec.field(default_factory=dict)
    snapshot: bool = False      # delivered from a snapshot, not live

    @property
    def type(self) -> str:
        return type(self.msg).__name__


def topic_of(msg_or_cls: Any) -> bytes:
    topic = _TOPICS.get(type(msg_or_cls))
    if topic is not None:
        return topic
    cls = msg_or_cls if isinstance(msg_or_cls, type) else type(msg_or_cls)
    return cls.__name__.encode()


def _checker(tp: Any) -> tuple[tuple[type, ...], bool]:
    """(accepted python types, nullable) for a field annotation."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        accepted: tuple[type, ...] = ()
        for a in args:
            accepted += _checker(a)[0]
        return accepted, True
    if origin is not None:
        tp = origin
    if tp is float:
        return (float, int), False
    if tp is Any:
        return (object,), True
    return (tp,), False


_FIELDS: dict[type, tuple[tuple[str, tuple[type, ...], bool, bool], ...]] = {}
for _cls in MESSAGE_TYPES:
    hints = typing.get_type_hints(_cls)
    _FIELDS[_cls] = tuple(
        (
            f.name,
            *_checker(hints[f.name]),
            f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
        )
        for f in dataclasses.fields(_cls)
    )


def encode(msg: Any, *, seq: int = 0, ts_ns: int = 0, src: str = "", epoch: int = 0,
           hops: dict[str, int] | None = None) -> bytes:
    """Message -> frame. msgspec writes the map (the body straight from the dataclass, fields in
    their declared order): the same bytes msgpack.packb(..., use_bin_type=True) writes, faster."""
    name = _NAMES.get(type(msg))
    if name is None:
        raise TypeError(f"{type(msg).__name__} is not a message type of common.messages")
    return _ENCODER.encode(_OutFrame(name, SCHEMA_VERSION, seq, ts_ns, src, epoch, hops or _NO_HOPS, msg))


def _frame_struct(cls: type) -> type:
    """The typed shape of a well-formed frame of one message type, for msgspec's decoder."""
    return msgspec.defstruct(f"{cls.__name__}Frame", [
        ("v", int), ("seq", int), ("ts", int), ("src", str), ("ep", int, 0),
        ("hops", dict[str, int], msgspec.field(default_factory=dict)), ("body", cls)],
        tag_field="type", tag=cls.__name__, kw_only=True)


_ENCODER = msgspec.msgpack.Encoder()
_NAMES: dict[type, str] = {cls: cls.__name__ for cls in MESSAGE_TYPES}
_NO_HOPS: dict[str, int] = {}     # only ever read
# The frame map with its keys in wire order: msgspec writes a struct as that map, the same bytes
# as a dict, without building the dict first.
_OutFrame = msgspec.defstruct("OutFrame", [("type", str), ("v", int), ("seq", int), ("ts", int), ("src", str),
                                           ("ep", int), ("hops", dict), ("body", Any)])
_FAST = msgspec.msgpack.Decoder(typing.Union[tuple(_frame_struct(c) for c in MESSAGE_TYPES)])


def decode(frame: bytes) -> Envelope:
    """Frame -> Envelope. Raises DecodeError naming what is wrong; never anything else.

    A well-formed frame is decoded and type-checked by msgspec in one pass (a few us); anything
    msgspec refuses goes through the checks below, which accept or name the fault exactly as
    they always have (they are the definition; the fast path only skips them when they would pass)."""
    try:
        f = _FAST.decode(frame)
        hops = f.hops
        if f.v == SCHEMA_VERSION and (not hops or all(type(x) is int for x in hops.values())):
            return Envelope(f.body, f.seq, f.ts, f.src, f.ep, hops)
    except (msgspec.DecodeError, msgspec.ValidationError, TypeError, ValueError):
        pass
    return _decode_checked(frame)


def _decode_checked(frame: bytes) -> Envelope:
    try:
        raw = msgpack.unpackb(frame, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise DecodeError(f"not msgpack ({type(exc).__name__}: {exc}); {len(frame)} bytes") from None
    if not isinstance(raw, dict):
        raise DecodeError(f"frame is a msgpack {type(raw).__name__}, expected a map")
    type_name = raw.get("type")
    cls = REGISTRY.get(type_name) if isinstance(type_name, str) else None
    if cls is None:
        raise DecodeError(f"unknown message type {type_name!r}")
    v = raw.get("v")
    if v != SCHEMA_VERSION:
        raise DecodeError(f"{type_name}: schema version {v!r}, this build speaks {SCHEMA_VERSION}")
    for key, kind in (("seq", int), ("ts", int), ("src", str)):
        val = raw.get(key)
        if not isinstance(val, kind) or isinstance(val, bool):
            raise DecodeError(f"{type_name}: envelope field {key!r} is {val!r}, expected {kind.__name__}")
    body = raw.get("body")
    if not isinstance(body, dict):
        raise DecodeError(f"{type_name}: body is {type(body).__name__}, expected a map")
    kwargs = {}
    for name, accepted, nullable, required in _FIELDS[cls]:
        if name not in body:
            if required:
                raise DecodeError(f"{type_name}: missing field {name!r}")
            continue
        val = body[name]
        if val is None:
            if not nullable:
                raise DecodeError(f"{type_name}.{name}: null is not allowed")
        elif not isinstance(val, accepted) or (isinstance(val, bool) and bool not in accepted):
            want = "/".join(t.__name__ for t in accepted)
            raise DecodeError(f"{type_name}.{name}: {val!r} is {type(val).__name__}, expected {want}")
        kwargs[name] = val
    hops = raw.get("hops") or {}
    if not isinstance(hops, dict):
        raise DecodeError(f"{type_name}: hops is {type(hops).__name__}, expected a map")
    for hop, hop_ns in hops.items():
        if not isinstance(hop, str) or not isinstance(hop_ns, int) or isinstance(hop_ns, bool):
            raise DecodeError(f"{type_name}: hop {hop!r} = {hop_ns!r}, expected a name and int ns")
    ep = raw.get("ep", 0)
    if not isinstance(ep, int) or isinstance(ep, bool):
        raise DecodeError(f"{type_name}: envelope field 'ep' is {ep!r}, expected int")
    return Envelope(cls(**kwargs), raw["seq"], raw["ts"], raw["src"], ep, hops)
