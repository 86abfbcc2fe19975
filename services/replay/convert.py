"""Convert a trades-only CSV (ts_utc, price) into a tick recording.

    python -m services.replay.convert data/real/ESM8_2018-05-07_trades.csv.gz -o logs/ticks/esm8.rec \
        [--contract CON.F.US.EP.M18]

The source has no quotes, sizes or aggressor sides, so they are DERIVED by the tick
rule: a trade above the previous price is a buy at the ask (bid one tick below); below
it, a sell at the bid (ask one tick above); at the same price, the same side as the
previous trade. Every trade has size 1. Each trade becomes a GatewayQuote (the book it
hit) followed by a GatewayTrade, both stamped with the trade's time, which is also used
as the receive time. Real quotes and sizes would differ: treat spreads (always 1 tick)
and volumes from a converted file as synthetic.
"""
from __future__ import annotations

import argparse
import csv
import gzip
import sys
from decimal import Decimal, InvalidOperation
from pathlib import Path

from common.instruments import InstrumentError, instrument_for
from common.topstepx.rest import parse_time
from common.recording import RecordingWriter


def convert(src: Path, dst: Path, contract: str) -> int:
    inst = instrument_for(contract)
    opener = gzip.open if src.suffix == ".gz" else open
    writer = None
    n = 0
    prev: Decimal | None = None
    side = 0            # 0 buy, 1 sell (TopstepX TradeLogType)
    with opener(src, "rt", newline="") as f:
        for lineno, row in enumerate(csv.DictReader(f), start=2):
            try:
                price = Decimal(row["price"])
                ts = row["ts_utc"]
                t_ns = parse_time(ts)
                inst.to_ticks(price)
            except (KeyError, InvalidOperation, ValueError, InstrumentError) as exc:
                print(f"convert: {src} line {lineno}: skipped ({exc})", file=sys.stderr)
                continue
            if writer is None:
                writer = RecordingWriter(dst, contract, t_ns)
            if prev is not None and price > prev:
                side = 0
            elif prev is not None and price < prev:
                side = 1
            prev = price
            if side == 0:
                bid, ask = price - inst.tick_size, price
            else:
                bid, ask = price, price + inst.tick_size
            writer.write(t_ns, "GatewayQuote", [contract, {
                "symbol": inst.symbol_id, "bestBid": float(bid), "bestAsk": float(ask),
                "lastPrice": float(price), "timestamp": ts}])
            writer.write(t_ns, "GatewayTrade", [contract, [{
                "symbolId": inst.symbol_id, "price": float(price), "timestamp": ts, "type": side, "volume": 1}]])
            n += 1
    if writer is not None:
        writer.close()
    return n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m services.replay.convert", description=__doc__.splitlines()[0])
    ap.add_argument("csv")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--contract", default="CON.F.US.EP.M18", help="contract id written into the recording")
    args = ap.parse_args(argv)
    dst = Path(args.output)
    if dst.exists():
        dst.unlink()
    try:
        n = convert(Path(args.csv), dst, args.contract)
    except (OSError, InstrumentError) as exc:
        print(f"convert: {exc}", file=sys.stderr)
        return 2
    print(f"convert: {n} trades -> {dst} ({2 * n} records)")
    return 0 if n else 1


if __name__ == "__main__":
    sys.exit(main())
