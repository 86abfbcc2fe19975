"""Simulator benchmark -> logs/bench/sim.json

Quote events per second delivered by the simulator's market hub to two SignalR clients
at once while orders are being placed and matched. The simulator runs as a real process
(tests/harness/sim.py) at speed 0 (as fast as its clients keep up) over the real ESM8
session. Each client is an asyncio WebSocket that speaks the SignalR JSON protocol
(handshake, 0x1E records), subscribes to quotes and trades, and parses every record with
json.loads, so a quote is counted only once a client holds it as an object. Meanwhile a
REST thread places orders (market in and out, limits either side of the market, stops)
and a user-hub client counts the order/trade events the matching produced.

Aim: at least 5,000 quotes/s to each of the two clients on this 2-core machine.

    .venv/bin/python -m tests.bench.bench_sim [--seconds 8]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import requests
import websockets

from tests.harness.procs import ROOT
from tests.harness.sim import SimProcess

RS = "\x1e"
AIM = 5000


class Client:
    def __init__(self, name: str):
        self.name = name
        self.quotes = 0
        self.trades = 0
        self.user_events = 0
        self.records = 0
        self.last_quote: dict | None = None


async def hub_client(url: str, subs: list[tuple[str, list]], c: Client, stop: asyncio.Event,
                     ready: asyncio.Event | None = None, deflate: bool = False) -> None:
    # default without permessage-deflate: the pipeline's signalrcore (websocket-client) does not
    # negotiate it; pysignalr (websockets) does, and the simulator (aiohttp) then compresses
    async with websockets.connect(url, compression="deflate" if deflate else None, max_size=1 << 22,
                                  max_queue=64) as ws:
        await ws.send('{"protocol":"json","version":1}' + RS)
        buf = ""
        handshaken = False
        pinged = time.monotonic()
        while not stop.is_set():
            if handshaken and time.monotonic() - pinged >= 10:   # the sim, like ASP.NET, drops a client
                pinged = time.monotonic()                        # silent for 30 s (ClientTimeoutInterval)
                await ws.send('{"type":6}' + RS)
            try:
                msg = await asyncio.wait_for(ws.recv(), 0.5)
            except asyncio.TimeoutError:
                continue
            buf += msg if isinstance(msg, str) else msg.decode()
            *records, buf = buf.split(RS)
            for rec in records:
                m = json.loads(rec)
                c.records += 1
                if not handshaken:
                    handshaken = True
                    for i, (target, args) in enumerate(subs):
                        await ws.send(json.dumps({"type": 1, "target": target, "arguments": args,
                                                  "invocationId": str(i)}) + RS)
                    if ready is not None:
                        ready.set()
                    continue
                if m.get("type") != 1:
                    continue
                t = m["target"]
                if t == "GatewayQuote":
                    c.quotes += 1
                    c.last_quote = m["arguments"][1]
                elif t == "GatewayTrade":
                    c.trades += len(m["arguments"][1])
                else:
                    c.user_events += 1


def order_flow(sim: SimProcess, token: str, stop: threading.Event, last_quote, out: dict) -> None:
    """Orders while the tape runs: market round trips, resting limits both sides, stops."""
    http = requests.Session()
    h = {"Authorization": f"Bearer {token}"}
    base = {"accountId": sim.account_id, "contractId": sim.contract_id}
    placed = refused = 0
    i = 0
    lat = []
    while not stop.is_set():
        q = last_quote()
        if q is None:
            time.sleep(0.01)
            continue
        bid, ask = q["bestBid"], q["bestAsk"]
        kind = i % 4
        if kind == 0:
            body = {**base, "type": 2, "side": i // 4 % 2, "size": 1}
        elif kind == 1:
            body = {**base, "type": 1, "side": 0, "size": 1, "limitPrice": bid - 0.25}
        elif kind == 2:
            body = {**base, "type": 1, "side": 1, "size": 1, "limitPrice": ask + 0.25}
        else:
            side = i // 4 % 2
            body = {**base, "type": 4, "side": side, "size": 1,
                    "stopPrice": ask + 0.5 if side == 0 else bid - 0.5}
        t0 = time.perf_counter()
        j = http.post(f"{sim.base_url}/api/Order/place", json=body, headers=h, timeout=10).json()
        lat.append((time.perf_counter() - t0) * 1000)
        placed += 1
        refused += not j.get("success")
        i += 1
        time.sleep(0.01)
    lat.sort()
    out.update({"orders_placed": placed, "orders_refused": refused,
                "place_ms_median": round(lat[len(lat) // 2], 2) if lat else None,
                "place_ms_p99": round(lat[int(len(lat) * 0.99)], 2) if lat else None})


async def run(sim: SimProcess, seconds: float, warmup: float, deflate: bool = False) -> dict:
    token = sim.token()
    cid = sim.contract_id
    subs = [("SubscribeContractQuotes", [cid]), ("SubscribeContractTrades", [cid])]
    clients = [Client("market-1"), Client("market-2")]
    user = Client("user")
    stop = asyncio.Event()
    ready = asyncio.Event()
    tasks = [asyncio.create_task(hub_client(f"ws://127.0.0.1:{sim.port}/hubs/market?access_token={token}",
                                            subs, c, stop, deflate=deflate)) for c in clients]
    tasks.append(asyncio.create_task(hub_client(
        f"ws://127.0.0.1:{sim.port}/hubs/user?access_token={token}",
        [("SubscribeOrders", [sim.account_id]), ("SubscribeTrades", [sim.account_id]),
         ("SubscribePositions", [sim.account_id]), ("SubscribeAccounts", [])], user, stop, ready)))
    await asyncio.wait_for(ready.wait(), 10)
    sim.control("resume")
    await asyncio.sleep(warmup)

    flow_out: dict = {}
    flow_stop = threading.Event()
    flow = threading.Thread(target=order_flow, args=(sim, token, flow_stop, lambda: clients[0].last_quote,
                                                     flow_out), daemon=True)
    q0 = [c.quotes for c in clients]
    t0_ = [c.trades for c in clients]
    s0 = sim.state()
    fills0, ticks0 = len(s0["trades"]), s0["stats"].get("ticks", 0)
    u0 = user.user_events
    start = time.perf_counter()
    flow.start()
    await asyncio.sleep(seconds)
    elapsed = time.perf_counter() - start
    q1 = [c.quotes for c in clients]
    t1 = [c.trades for c in clients]
    u1 = user.user_events
    flow_stop.set()
    await asyncio.to_thread(flow.join, 15)
    s1 = sim.state()
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)

    per_client = [round((b - a) / elapsed) for a, b in zip(q0, q1)]
    return {
        "seconds": round(elapsed, 2),
        "quotes_per_s_per_client": per_client,
        "quotes_per_s_min_client": min(per_client),
        "quotes_per_s_both_clients": sum(per_client),
        "market_trades_per_s_per_client": [round((b - a) / elapsed) for a, b in zip(t0_, t1)],
        "sim_ticks_per_s": round((s1["stats"].get("ticks", 0) - ticks0) / elapsed),
        "fills_during_run": len(s1["trades"]) - fills0,
        "user_hub_events_per_s": round((u1 - u0) / elapsed, 1),
        **flow_out,
        "aim_quotes_per_s": AIM,
        "meets_aim": min(per_client) >= AIM,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    args = ap.parse_args()
    out: dict = {"bench": "sim", "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                 "setup": "python -m services.sim at speed 0 (as fast as clients keep up), real ESM8 ticks; "
                          "2 market-hub clients (asyncio WebSocket, SignalR JSON, json.loads per record, "
                          "no permessage-deflate) + 1 user-hub client; a REST thread placing "
                          "market/limit/stop orders every ~10 ms"}
    for key, deflate in (("result", False), ("with_permessage_deflate", True)):
        with tempfile.TemporaryDirectory() as d:
            with SimProcess(Path(d) / "sim", speed=0, rate_limit_per_min=1_000_000,
                            starting_balance=1_000_000, max_client_queue=20_000) as sim:
                sim.control("pause")
                out[key] = asyncio.run(run(sim, args.seconds, args.warmup, deflate))
    path = ROOT / "logs" / "bench" / "sim.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
