"""Contract specifications: the one table every price and P&L calculation reads.

Prices travel through the pipeline as integer ticks, so no float ever decides a
cent. Decimal appears only at the edges: parsing a broker price, printing one.
Money is integer cents (fees such as $0.37 a side are whole cents).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation


class InstrumentError(ValueError):
    """An unknown contract or a price that does not fit the instrument."""


@dataclass(frozen=True, slots=True)
class Instrument:
    symbol: str          # trader's ticker: MES
    root: str            # TopstepX root inside the contract id: MES, EP for ES
    tick_size: Decimal   # index points per tick
    tick_value_cents: int  # USD cents per tick per contract
    fee_per_side_cents: int  # exchange + clearing + commission per contract per side
    description: str

    @property
    def symbol_id(self) -> str:
        return f"F.US.{self.root}"

    @property
    def point_value_cents(self) -> int:
        return int(self.tick_value_cents / self.tick_size)

    @property
    def round_trip_fee_cents(self) -> int:
        return 2 * self.fee_per_side_cents

    # -- tick math -------------------------------------------------------
    def to_ticks(self, price: Decimal | str | int | float) -> int:
        """Exact price -> ticks; raises when the price is off the tick grid."""
        d = to_decimal(price)
        q = d / self.tick_size
        if q != q.to_integral_value():
            raise InstrumentError(f"{self.symbol}: price {d} is not a multiple of tick size {self.tick_size}")
        return int(q)

    def to_ticks_rounded(self, price: Decimal | str | int | float) -> int:
        """Nearest tick (half-even), for inputs known to carry float noise."""
        d = to_decimal(price)
        return int((d / self.tick_size).to_integral_value(rounding=ROUND_HALF_EVEN))

    def to_price(self, ticks: int) -> Decimal:
        return self.tick_size * int(ticks)

    def ticks_to_cents(self, ticks: int, size: int = 1) -> int:
        """P&L of a move of `ticks` on `size` contracts, gross of fees."""
        return int(ticks) * int(size) * self.tick_value_cents

    def fmt(self, ticks: int) -> str:
        """Price for humans and logs: 6050.25."""
        return f"{self.to_price(ticks):.2f}"


def to_decimal(value: Decimal | str | int | float) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        # repr() gives the shortest string that round-trips: 6050.25 stays 6050.25
        value = repr(value)
    try:
        d = Decimal(str(value))
    except InvalidOperation as exc:
        raise InstrumentError(f"not a price: {value!r}") from exc
    if not d.is_finite():
        raise InstrumentError(f"not a finite price: {value!r}")
    return d


def cents_to_str(cents: int) -> str:
    """-1750 -> '-$17.50'; 1750 -> '+$17.50' (the spec's TRADE CLOSED format)."""
    sign = "-" if cents < 0 else "+"
    c = abs(int(cents))
    return f"{sign}${c // 100}.{c % 100:02d}"


# Fees: Topstep's published round-trip cost per contract (commission + exchange + NFA),
# halved per side. Micros $0.74 RT, minis $2.80 RT. Edit here, nowhere else.
INSTRUMENTS: dict[str, Instrument] = {
    i.symbol: i
    for i in (
        Instrument("MES", "MES", Decimal("0.25"), 125, 37, "Micro E-mini S&P 500"),
        Instrument("ES", "EP", Decimal("0.25"), 1250, 140, "E-mini S&P 500"),
        Instrument("MNQ", "MNQ", Decimal("0.25"), 50, 37, "Micro E-mini Nasdaq-100"),
        Instrument("NQ", "ENQ", Decimal("0.25"), 500, 140, "E-mini Nasdaq-100"),
    )
}
_BY_ROOT = {i.root: i for i in INSTRUMENTS.values()}

MONTH_CODES = "FGHJKMNQUVXZ"
_CONTRACT_RE = re.compile(r"^CON\.F\.US\.(?P<root>[A-Z0-9]+)\.(?P<month>[FGHJKMNQUVXZ])(?P<year>\d{2})$")


def parse_contract_id(contract_id: str) -> tuple[Instrument, str, int]:
    """'CON.F.US.MES.H26' -> (MES, 'H', 2026). Raises InstrumentError naming the id."""
    m = _CONTRACT_RE.match(contract_id or "")
    if not m:
        raise InstrumentError(
            f"contract id {contract_id!r} is not of the form CON.F.US.<ROOT>.<month code><2-digit year>, e.g. CON.F.US.MES.H26"
        )
    inst = _BY_ROOT.get(m["root"])
    if inst is None:
        raise InstrumentError(
            f"contract {contract_id!r}: unknown root {m['root']!r}; known: {', '.join(sorted(_BY_ROOT))}"
        )
    return inst, m["month"], 2000 + int(m["year"])


def instrument_for(contract_id: str) -> Instrument:
    """The instrument of a contract id, or of a bare symbol (`trading.contract: MES`)."""
    if contract_id in INSTRUMENTS:
        return INSTRUMENTS[contract_id]
    return parse_contract_id(contract_id)[0]


def contract_name(contract_id: str) -> str:
    """TopstepX display name: CON.F.US.MES.H26 -> MESH6 (one-digit year, 2025+ format)."""
    inst, month, year = parse_contract_id(contract_id)
    return f"{inst.symbol}{month}{year % 10}"
