"""Errors and small conversions the gateway's parts share."""
from __future__ import annotations

from decimal import Decimal
from typing import Any

from common.topstepx.rest import TopstepXError


class Unconfirmed(TopstepXError):
    """A write whose outcome could not be confirmed by looking its tag up in bounded time."""


def cents(value: Any) -> int:
    return int((Decimal(str(value or 0)) * 100).to_integral_value())
