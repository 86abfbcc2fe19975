"""The wire formats the simulator shares between REST and hubs: ISO timestamps, the
SignalR record separator and invocation frames, request-body field reading and the two
ways a request fails (HTTP 400 ProblemDetails, or a 200 with success false)."""
from __future__ import annotations

import itertools
import json
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

from aiohttp import web

from common.instruments import Instrument, InstrumentError
from services.sim.market import NS

RS = "\x1e"


def iso(ns: int) -> str:
    dt = datetime.fromtimestamp(ns // NS, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{ns % NS // 1000:06d}+00:00"


def parse_iso(s: Any) -> int:
    if not isinstance(s, str) or not s:
        raise ValueError("timestamp must be an ISO-8601 string")
    s = s.strip().replace("Z", "+00:00")
    frac = 0
    if "." in s:
        head, rest = s.split(".", 1)
        digits = "".join(itertools.takewhile(str.isdigit, rest))
        s = head + rest[len(digits):]
        frac = int((digits + "000000000")[:9])
    dt = datetime.fromisoformat(s)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp()) * NS + frac


def inv(target: str, *args: Any) -> str:
    return json.dumps({"type": 1, "target": target, "arguments": list(args)}, separators=(",", ":")) + RS


class BadRequest(Exception):
    """An unreadable body: HTTP 400 with a ProblemDetails body, like ASP.NET."""


class Refused(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def field_of(body: dict, name: str, kind: type | tuple, required: bool = True, default: Any = None) -> Any:
    if name not in body or body[name] is None:
        if required:
            raise BadRequest(f"The {name} field is required.")
        return default
    val = body[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(val, bool) and bool not in kinds:
        raise BadRequest(f"The JSON value of {name} could not be converted.")
    if not isinstance(val, kinds):
        raise BadRequest(f"The JSON value of {name} could not be converted.")
    return val


def price_of(body: dict, name: str, inst: Instrument) -> int | None:
    if name not in body or body[name] is None:
        return None
    val = body[name]
    if isinstance(val, bool) or not isinstance(val, (int, float, str)):
        raise BadRequest(f"The JSON value of {name} could not be converted.")
    try:
        d = Decimal(str(val))
    except InvalidOperation:
        raise BadRequest(f"The JSON value of {name} could not be converted.") from None
    if not d.is_finite() or d <= 0:
        raise Refused(2, f"Invalid {name}: {val}")
    try:
        return inst.to_ticks(d)
    except InstrumentError:
        raise Refused(2, f"Invalid {name}: {val} is not a multiple of the tick size {inst.tick_size}") from None


def parse_iso_field(body: dict, name: str) -> int:
    val = field_of(body, name, str)
    try:
        return parse_iso(val)
    except ValueError:
        raise BadRequest(f"The JSON value of {name} could not be converted.") from None


def problem(detail: str) -> web.Response:
    return web.json_response({"type": "https://tools.ietf.org/html/rfc9110#section-15.5.1",
                              "title": "One or more validation errors occurred.", "status": 400,
                              "errors": {"request": [detail]}}, status=400)
