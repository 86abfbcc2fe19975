"""The TopstepX simulator (services/sim) as a client of the real service sees it.

A real `python -m services.sim` process (tests/harness/sim.py) is driven with the
packages the pipeline uses: `requests` (raw and through common/topstepx/rest.py) and
`signalrcore` (through common/topstepx/hub.py HubClient); a second, independent SignalR
client (`pysignalr`, which also exercises /negotiate) and a raw WebSocket client that
checks the protocol records byte for byte. Every fault the control API injects is
observed from the client side, and malformed requests get the documented error without
taking the simulator down. Field lists: ../shared/topstepx_api.md §1.6, §1.7, §3.3.
"""
from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
import requests
from websockets.sync.client import connect as ws_connect

from common.topstepx.hub import HubClient
from common.topstepx.rest import BrokerError, TopstepXClient
from tests.harness.procs import wait_for
from tests.harness.sim import SimProcess

pytestmark = pytest.mark.integration

RS = "\x1e"
QUOTE_FIELDS = {"symbol", "symbolName", "lastPrice", "bestBid", "bestAsk", "change", "changePercent", "open",
                "high", "low", "volume", "lastUpdated", "timestamp"}
TRADE_FIELDS = {"symbolId", "price", "timestamp", "type", "volume"}
ORDER_FIELDS = {"id", "accountId", "contractId", "symbolId", "creationTimestamp", "updateTimestamp", "status",
                "type", "side", "size", "limitPrice", "stopPrice", "fillVolume", "filledPrice", "customTag"}
POSITION_FIELDS = {"id", "accountId", "contractId", "creationTimestamp", "type", "size", "averagePrice"}
USER_TRADE_FIELDS = {"id", "accountId", "contractId", "creationTimestamp", "price", "profitAndLoss", "fees",
                     "side", "size", "voided", "orderId"}
ACCOUNT_FIELDS = {"id", "name", "balance", "canTrade", "isVisible", "simulated"}
CONTRACT_FIELDS = {"id", "name", "description", "tickSize", "tickValue", "activeContract", "symbolId"}

LIMIT, MARKET, STOP = 1, 2, 4
BUY, SELL = 0, 1


# --------------------------------------------------------------------------
# fixtures and helpers
# --------------------------------------------------------------------------

@pytest.fixture
def sim(tmp_path):
    with SimProcess(tmp_path / "sim", speed=20, rate_limit_per_min=100_000) as s:
        yield s


@pytest.fixture(scope="module")
def shared_sim(tmp_path_factory):
    """One simulator for the read-only and malformed-request tests."""
    with SimProcess(tmp_path_factory.mktemp("shared-sim"), speed=5, rate_limit_per_min=100_000) as s:
        yield s


class Rest:
    """Raw `requests` client: keeps the HTTP status visible."""

    def __init__(self, sim: SimProcess):
        self.sim = sim
        self.http = requests.Session()
        self.tok = sim.token()

    def post(self, path: str, body=None, *, token: str | None = "default", raw: bytes | None = None,
             timeout: float = 5) -> requests.Response:
        headers = {"Content-Type": "application/json"}
        tok = self.tok if token == "default" else token
        if tok is not None:
            headers["Authorization"] = f"Bearer {tok}"
        data = raw if raw is not None else json.dumps(body if body is not None else {})
        return self.http.post(self.sim.base_url + path, data=data, headers=headers, timeout=timeout)

    def ok(self, path: str, body: dict) -> dict:
        r = self.post(path, body)
        assert r.status_code == 200, (path, r.status_code, r.text)
        j = r.json()
        assert j["success"] is True and j["errorCode"] == 0 and j["errorMessage"] is None, j
        return j

    def place(self, type_: int, side: int, size: int = 1, **extra) -> dict:
        body = {"accountId": self.sim.account_id, "contractId": self.sim.contract_id, "type": type_,
                "side": side, "size": size, **extra}
        return self.post("/api/Order/place", body).json()


class Events:
    """Thread-safe collector of hub events: target -> list of argument lists."""

    def __init__(self):
        self.lock = threading.Lock()
        self.by: dict[str, list] = {}

    def add(self, target: str):
        def fn(args):
            with self.lock:
                self.by.setdefault(target, []).append(args)
        return fn

    def get(self, target: str) -> list:
        with self.lock:
            return list(self.by.get(target, []))

    def count(self, target: str) -> int:
        with self.lock:
            return len(self.by.get(target, []))

    def data(self, target: str) -> list[dict]:
        """User-hub payloads: the `{action, data}` envelope checked and kept."""
        out = []
        for args in self.get(target):
            assert len(args) == 1 and set(args[0]) == {"action", "data"}, args
            out.append(args[0])
        return out

    def clear(self) -> None:
        with self.lock:
            self.by.clear()


def market_client(sim: SimProcess, events: Events, *, quotes=True, trades=True) -> HubClient:
    def subscribe(h: HubClient) -> None:
        if quotes:
            h.send("SubscribeContractQuotes", [sim.contract_id])
        if trades:
            h.send("SubscribeContractTrades", [sim.contract_id])
    return HubClient(sim.market_hub_url, sim.token, subscribe,
                     {"GatewayQuote": events.add("GatewayQuote"), "GatewayTrade": events.add("GatewayTrade")},
                     name="market", min_backoff_s=0.05, max_backoff_s=0.3)


def user_client(sim: SimProcess, events: Events) -> HubClient:
    aid = sim.account_id

    def subscribe(h: HubClient) -> None:
        h.send("SubscribeAccounts", [])
        for m in ("SubscribeOrders", "SubscribePositions", "SubscribeTrades"):
            h.send(m, [aid])
    targets = ("GatewayUserOrder", "GatewayUserPosition", "GatewayUserTrade", "GatewayUserAccount")
    return HubClient(sim.user_hub_url, sim.token, subscribe, {t: events.add(t) for t in targets},
                     name="user", min_backoff_s=0.05, max_backoff_s=0.3)


def subscribed(sim: SimProcess, hub: str, topic: str, n: int = 1):
    def check():
        return sum(1 for c in sim.state()["connections"] if c["hub"] == hub and c["subs"].get(topic)) >= n
    return check


class RawHub:
    """A bare WebSocket speaking the SignalR JSON protocol by hand."""

    def __init__(self, sim: SimProcess, hub: str, token: str | None = None, handshake: bool = True):
        url = f"ws://127.0.0.1:{sim.port}/hubs/{hub}?access_token={token or sim.token()}"
        # unbounded receive queue: an unread backlog must not hold up the close handshake
        self.ws = ws_connect(url, open_timeout=5, close_timeout=2, max_size=1 << 22, max_queue=None).__enter__()
        self.buf = ""
        self.closed = False
        if handshake:
            self.ws.send('{"protocol":"json","version":1}' + RS)
            assert self.recv(5) == {}

    def send(self, obj) -> None:
        self.ws.send((obj if isinstance(obj, str) else json.dumps(obj)) + RS)

    def recv_raw(self, timeout: float) -> str | None:
        """The next record as text; None on timeout or close."""
        deadline = time.monotonic() + timeout
        while RS not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or self.closed:
                return None
            try:
                msg = self.ws.recv(timeout=left)
            except TimeoutError:
                return None
            except Exception:
                self.closed = True
                return None
            self.buf += msg if isinstance(msg, str) else msg.decode()
        rec, self.buf = self.buf.split(RS, 1)
        return rec

    def recv(self, timeout: float = 5):
        rec = self.recv_raw(timeout)
        return None if rec is None else json.loads(rec)

    def records(self, timeout: float, until=None) -> list:
        """Records (parsed, or the raw text when not JSON) until `until(record)` or timeout."""
        out = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rec = self.recv_raw(deadline - time.monotonic())
            if rec is None:
                break
            try:
                rec = json.loads(rec)
            except ValueError:
                pass
            out.append(rec)
            if until is not None and until(rec):
                break
        return out

    def close(self) -> None:
        try:
            self.ws.close()
        except Exception:
            pass


def invocations(records: list, target: str) -> list:
    return [r for r in records if isinstance(r, dict) and r.get("type") == 1 and r.get("target") == target]


def jwt_claims(token: str) -> dict:
    body = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


def iso_ago(sim: SimProcess, seconds: float = 86400 * 30) -> str:
    """A time `seconds` before the simulator's market clock (its tape runs on a fixed market day,
    days away from the wall clock, so a window measured from the wall clock finds nothing)."""
    now = datetime.fromisoformat(sim.state()["market"]["now"].replace("Z", "+00:00"))
    return (now - timedelta(seconds=seconds)).isoformat()


def parse_ts(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def set_market(sim: SimProcess, bid: float, ask: float | None = None, last: float | None = None) -> None:
    params = {"bid": bid, "ask": ask if ask is not None else bid + 0.25}
    if last is not None:
        params["last"] = last
    sim.control("price", **params)


def started(*clients: HubClient, timeout: float = 10) -> None:
    for c in clients:
        c.start()
    for c in clients:
        wait_for(lambda c=c: c.connected, timeout, what=f"hub {c.name} connected")


# --------------------------------------------------------------------------
# REST: auth, accounts, contracts
# --------------------------------------------------------------------------

def test_login_validate_account_and_contract_search(shared_sim):
    sim = shared_sim
    r = requests.post(sim.base_url + "/api/Auth/loginKey", json={"userName": sim.username, "apiKey": sim.api_key},
                      timeout=5)
    assert r.status_code == 200
    j = r.json()
    assert j["success"] is True and j["errorCode"] == 0 and j["errorMessage"] is None
    claims = jwt_claims(j["token"])
    assert claims["exp"] > time.time() + 3600

    rest = Rest(sim)
    new = rest.ok("/api/Auth/validate", {})["newToken"]
    assert new and new != rest.tok and jwt_claims(new)["exp"] >= claims["exp"] - 1
    rest.tok = new                       # the fresh token works; the old one still does too
    accounts = rest.ok("/api/Account/search", {"onlyActiveAccounts": True})["accounts"]
    assert len(accounts) == 1 and set(accounts[0]) >= ACCOUNT_FIELDS
    a = accounts[0]
    assert a["id"] == sim.account_id and a["canTrade"] is True and a["simulated"] is True
    assert isinstance(a["balance"], (int, float))

    found = rest.ok("/api/Contract/search", {"searchText": "MES", "live": False})["contracts"]
    assert 1 <= len(found) <= 20
    mes = next(c for c in found if c["id"] == sim.contract_id)
    assert set(mes) >= CONTRACT_FIELDS
    assert (mes["tickSize"], mes["tickValue"], mes["symbolId"], mes["name"]) == (0.25, 1.25, "F.US.MES", "MESZ6")
    assert rest.ok("/api/Contract/searchById", {"contractId": sim.contract_id})["contract"]["id"] == sim.contract_id
    assert rest.post("/api/Auth/validate", {}, token=rest.tok).status_code == 200


def test_bad_login_is_http_200_error_code_3_and_missing_key_is_400(shared_sim):
    sim = shared_sim
    r = requests.post(sim.base_url + "/api/Auth/loginKey", json={"userName": sim.username, "apiKey": "wrong"},
                      timeout=5)
    assert r.status_code == 200
    j = r.json()
    # the documented failure keeps its field, null: a client reading body["token"] must not KeyError
    assert j["success"] is False and j["errorCode"] == 3 and "token" in j and j["token"] is None
    r = requests.post(sim.base_url + "/api/Auth/loginKey", json={"userName": sim.username}, timeout=5)
    assert r.status_code == 400


def test_pipeline_rest_wrapper_works_unchanged(shared_sim):
    sim = shared_sim
    client = TopstepXClient(sim.base_url, sim.username, sim.api_key)
    try:
        assert client.accounts()[0]["id"] == sim.account_id
        assert client.contract(sim.contract_id)["id"] == sim.contract_id
        assert isinstance(client.open_positions(sim.account_id), list)
        with pytest.raises(BrokerError) as exc:
            client.call("/api/Order/cancel", {"accountId": sim.account_id, "orderId": 1})
        assert exc.value.code == 2
    finally:
        client.close()


def test_retrieve_bars_newest_first(shared_sim):
    rest = Rest(shared_sim)
    wait_for(lambda: shared_sim.state()["stats"].get("ticks", 0) > 20, 10, what="ticks")
    now = shared_sim.state()["market"]["now"]
    body = {"contractId": shared_sim.contract_id, "live": False, "startTime": iso_ago(shared_sim, 86400 * 3),
            "endTime": now, "unit": 1, "unitNumber": 1, "limit": 5, "includePartialBar": True}
    bars = rest.ok("/api/History/retrieveBars", body)["bars"]
    assert 1 <= len(bars) <= 5
    assert all(set(b) >= {"t", "o", "h", "l", "c", "v"} and b["l"] <= b["o"] <= b["h"] for b in bars)
    assert [b["t"] for b in bars] == sorted((b["t"] for b in bars), reverse=True)
    for field, value, code in (("unit", 9, 2), ("unitNumber", 0, 3), ("limit", 20001, 4)):
        j = rest.post("/api/History/retrieveBars", {**body, field: value}).json()
        assert (j["success"], j["errorCode"]) == (False, code)


# --------------------------------------------------------------------------
# market hub
# --------------------------------------------------------------------------

def test_signalrcore_receives_quotes_and_trades_with_documented_fields(sim):
    ev = Events()
    hub = market_client(sim, ev)
    try:
        started(hub)
        wait_for(lambda: ev.count("GatewayQuote") >= 5 and ev.count("GatewayTrade") >= 5, 10,
                 what="quotes and trades")
    finally:
        hub.stop()
    for cid, q in ev.get("GatewayQuote"):
        assert cid == sim.contract_id
        assert set(q) >= QUOTE_FIELDS
        assert q["symbol"] == "F.US.MES"
        assert q["bestBid"] < q["bestAsk"] and q["low"] <= q["lastPrice"] <= q["high"]
        assert parse_ts(q["timestamp"]).tzinfo is not None
    for cid, trades in ev.get("GatewayTrade"):
        assert cid == sim.contract_id and isinstance(trades, list) and trades
        for t in trades:
            assert set(t) >= TRADE_FIELDS and t["type"] in (0, 1) and t["volume"] >= 1
            assert t["symbolId"] == "F.US.MES"
    vols = [q["volume"] for _, q in ev.get("GatewayQuote")]
    assert vols == sorted(vols)              # session total, not per tick


def test_pysignalr_connects_with_negotiation_and_receives_events(sim):
    from pysignalr.client import SignalRClient

    tok = sim.token()
    quotes, trades, errors, orders, completions = [], [], [], [], []

    async def run() -> None:
        market = SignalRClient(f"{sim.market_hub_url}?access_token={tok}")
        user = SignalRClient(f"{sim.user_hub_url}?access_token={tok}")

        async def on_quote(args):
            quotes.append(args)

        async def on_trade(args):
            trades.append(args)

        async def on_order(args):
            orders.append(args)

        async def on_error(msg):
            errors.append(msg)

        async def on_done(msg):
            completions.append(msg)

        async def market_open():
            # with a callback pysignalr sends an invocationId and routes the Completion back
            await market.send("SubscribeContractQuotes", [sim.contract_id], on_done)
            await market.send("SubscribeContractTrades", [sim.contract_id])
            await market.send("SubscribeContractDepth", [sim.contract_id], on_done)   # wrong name seen live

        async def user_open():
            await user.send("SubscribeOrders", [sim.account_id])

        market.on("GatewayQuote", on_quote)
        market.on("GatewayTrade", on_trade)
        market.on_open(market_open)
        market.on_error(on_error)
        user.on("GatewayUserOrder", on_order)
        user.on_open(user_open)
        tasks = [asyncio.create_task(market.run()), asyncio.create_task(user.run())]
        try:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and not (len(quotes) >= 3 and trades and errors):
                await asyncio.sleep(0.05)
            while time.monotonic() < deadline and not any(c["hub"] == "user" and c["subs"].get("orders")
                                                          for c in sim.state()["connections"]):
                await asyncio.sleep(0.05)
            await asyncio.to_thread(Rest(sim).place, LIMIT, BUY, 1, limitPrice=1000.0)
            while time.monotonic() < deadline and not orders:
                await asyncio.sleep(0.05)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(run())
    assert len(quotes) >= 3 and trades
    cid, q = quotes[0]
    assert cid == sim.contract_id and set(q) >= QUOTE_FIELDS
    assert isinstance(trades[0][1], list) and set(trades[0][1][0]) >= TRADE_FIELDS
    assert completions and getattr(completions[0], "error", None) is None        # Subscribe succeeded
    assert errors and "does not exist" in str(getattr(errors[0], "error", errors[0]))
    assert orders and orders[0][0]["data"]["limitPrice"] == 1000.0 and set(orders[0][0]["data"]) >= ORDER_FIELDS
    assert sim.state()["stats"].get("market_connects", 0) >= 1


def test_wrong_argument_count_or_type_fails_the_invocation_as_aspnet_binding_does(sim):
    hub = RawHub(sim, "user")
    try:
        calls = {"1": ("SubscribeOrders", [str(sim.account_id)]),     # a string where the hub takes an int
                 "2": ("SubscribeOrders", []),
                 "3": ("SubscribePositions", [sim.account_id, 1]),
                 "4": ("SubscribeAccounts", []),
                 "5": ("SubscribeOrders", [sim.account_id])}
        for inv, (target, args) in calls.items():
            hub.send({"type": 1, "target": target, "arguments": args, "invocationId": inv})
        recs = hub.records(5, until=lambda r: isinstance(r, dict) and r.get("invocationId") == "5")
        done = {r["invocationId"]: r for r in recs if isinstance(r, dict) and r.get("type") == 3}
        assert "Error binding arguments" in done["1"]["error"]
        assert "provides 0 argument(s) but target expects 1" in done["2"]["error"]
        assert "provides 2 argument(s) but target expects 1" in done["3"]["error"]
        assert done["4"].get("error") is None and done["5"].get("error") is None
        subs = [c["subs"] for c in sim.state()["connections"] if c["hub"] == "user"]
        assert any(s.get("orders") for s in subs) and not any(s.get("positions") for s in subs)
    finally:
        hub.close()


def test_raw_protocol_handshake_completions_and_pings(sim):
    hub = RawHub(sim, "market")
    try:
        hub.send({"type": 1, "target": "SubscribeContractQuotes", "arguments": [sim.contract_id],
                  "invocationId": "7"})
        hub.send({"type": 1, "target": "NoSuchMethod", "arguments": [], "invocationId": "8"})
        hub.send({"type": 1, "target": "SubscribeContractTrades", "arguments": [sim.contract_id]})  # no id
        hub.send({"type": 6})                                           # client ping: accepted silently
        recs = hub.records(5, until=lambda r: isinstance(r, dict) and r.get("invocationId") == "8")
        done = {r["invocationId"]: r for r in recs if isinstance(r, dict) and r.get("type") == 3}
        assert done["7"].get("error") is None and "result" in done["7"]
        assert "Method does not exist" in done["8"]["error"] and "result" not in done["8"]
        recs = hub.records(2)
        assert not [r for r in recs if isinstance(r, dict) and r.get("type") == 3]   # none for no-id
        assert invocations(recs, "GatewayQuote") and invocations(recs, "GatewayTrade")
        for r in invocations(recs, "GatewayQuote"):
            assert r["arguments"][0] == sim.contract_id and len(r["arguments"]) == 2
    finally:
        hub.close()

    # the handshake with an unknown protocol is answered with an error and closed
    bad = RawHub(sim, "market", handshake=False)
    bad.send({"protocol": "messagepack", "version": 1})
    rec = bad.recv(5)
    assert "error" in rec and bad.recv(2) is None
    bad.close()


def test_server_pings_arrive(tmp_path):
    with SimProcess(tmp_path / "sim", speed=1, ping_interval_s=0.3) as sim:
        sim.control("pause")
        hub = RawHub(sim, "user")
        try:
            recs = hub.records(2)
            assert sum(1 for r in recs if r == {"type": 6}) >= 2
        finally:
            hub.close()


def test_hub_rejects_missing_or_bad_token(sim):
    for query in ("", "?access_token=not.a.jwt"):
        with pytest.raises(Exception) as exc:
            ws_connect(f"ws://127.0.0.1:{sim.port}/hubs/market{query}", open_timeout=5)
        assert "401" in str(exc.value)
    r = requests.post(f"{sim.market_hub_url}/negotiate?negotiateVersion=1", timeout=5)
    assert r.status_code == 401
    r = requests.post(f"{sim.market_hub_url}/negotiate?negotiateVersion=1&access_token={sim.token()}", timeout=5)
    assert r.status_code == 200 and r.json()["availableTransports"][0]["transport"] == "WebSockets"


# --------------------------------------------------------------------------
# user hub: market, limit and stop orders
# --------------------------------------------------------------------------

def test_orders_fills_and_positions_on_the_user_hub(sim):
    rest = Rest(sim)
    set_market(sim, 5000.00, 5000.25)
    ev = Events()
    user = user_client(sim, ev)
    try:
        started(user)
        wait_for(subscribed(sim, "user", "trades"), 5, what="user subscriptions")

        # market buy 2 at the ask
        j = rest.place(MARKET, BUY, 2, customTag="entry-1")
        assert j["success"] is True and j["errorCode"] == 0 and isinstance(j["orderId"], int)
        mkt_id = j["orderId"]
        wait_for(lambda: ev.count("GatewayUserTrade") >= 1 and ev.count("GatewayUserPosition") >= 1
                 and ev.count("GatewayUserAccount") >= 1, 5, what="fill events")
        orders = [p["data"] for p in ev.data("GatewayUserOrder") if p["data"]["id"] == mkt_id]
        assert all(set(o) >= ORDER_FIELDS for o in orders)
        assert [o["status"] for o in orders] == [1, 2]
        o = orders[-1]
        assert (o["type"], o["side"], o["size"], o["fillVolume"], o["filledPrice"], o["customTag"]) == \
            (MARKET, BUY, 2, 2, 5000.25, "entry-1")
        assert o["accountId"] == sim.account_id and o["contractId"] == sim.contract_id
        assert o["symbolId"] == "F.US.MES"
        (t,) = [p for p in ev.data("GatewayUserTrade")]
        assert t["action"] == 0 and set(t["data"]) >= USER_TRADE_FIELDS
        td = t["data"]
        assert (td["orderId"], td["price"], td["size"], td["side"], td["profitAndLoss"], td["fees"], td["voided"]) \
            == (mkt_id, 5000.25, 2, BUY, None, 0.74, False)
        (p,) = ev.data("GatewayUserPosition")
        assert set(p["data"]) >= POSITION_FIELDS
        assert (p["data"]["type"], p["data"]["size"], p["data"]["averagePrice"]) == (1, 2, 5000.25)
        acct = ev.data("GatewayUserAccount")[-1]["data"]
        assert set(acct) >= ACCOUNT_FIELDS and acct["balance"] == 1000 - 0.74

        # limit sell 1 above the market rests (status 1), fills when the market trades through
        ev.clear()
        lim_id = rest.place(LIMIT, SELL, 1, limitPrice=5002.00)["orderId"]
        wait_for(lambda: ev.count("GatewayUserOrder") >= 1, 5, what="limit order event")
        first = ev.data("GatewayUserOrder")[0]["data"]
        assert (first["id"], first["status"], first["limitPrice"], first["stopPrice"], first["fillVolume"]) == \
            (lim_id, 1, 5002.0, None, 0)
        assert [o["id"] for o in rest.ok("/api/Order/searchOpen", {"accountId": sim.account_id})["orders"]] \
            == [lim_id]
        set_market(sim, 5002.00, 5002.25)
        wait_for(lambda: ev.count("GatewayUserTrade") >= 1, 5, what="limit fill")
        td = ev.data("GatewayUserTrade")[0]["data"]
        assert (td["orderId"], td["price"], td["size"], td["side"]) == (lim_id, 5002.0, 1, SELL)
        assert td["profitAndLoss"] == pytest.approx(7 * 1.25) and td["fees"] == 0.37
        pos = ev.data("GatewayUserPosition")[-1]
        assert pos["action"] == 1 and (pos["data"]["type"], pos["data"]["size"]) == (1, 1)

        # stop sell below the market, triggered by the quote, fills as market at the bid
        ev.clear()
        stop_id = rest.place(STOP, SELL, 1, stopPrice=4999.00)["orderId"]
        wait_for(lambda: ev.count("GatewayUserOrder") >= 1, 5, what="stop order event")
        assert ev.data("GatewayUserOrder")[0]["data"]["stopPrice"] == 4999.0
        set_market(sim, 5000.00)
        time.sleep(0.3)
        assert ev.count("GatewayUserTrade") == 0                  # not reached
        set_market(sim, 4998.75)
        wait_for(lambda: ev.count("GatewayUserTrade") >= 1, 5, what="stop fill")
        td = ev.data("GatewayUserTrade")[0]["data"]
        assert (td["orderId"], td["price"], td["side"]) == (stop_id, 4998.75, SELL)
        assert td["profitAndLoss"] == pytest.approx(-6 * 1.25)
        closed = ev.data("GatewayUserPosition")[-1]
        assert closed["action"] == 2 and closed["data"]["size"] == 0 and closed["data"]["type"] == 0
        wait_for(lambda: ev.count("GatewayUserAccount") >= 1, 5, what="account event")
    finally:
        user.stop()

    # the REST record agrees with the events
    expected = 1000 - 4 * 0.37 + 7 * 1.25 - 6 * 1.25
    assert ev.data("GatewayUserAccount")[-1]["data"]["balance"] == pytest.approx(expected)
    assert rest.ok("/api/Account/search", {"onlyActiveAccounts": True})["accounts"][0]["balance"] == \
        pytest.approx(expected)
    assert rest.ok("/api/Position/searchOpen", {"accountId": sim.account_id})["positions"] == []
    assert rest.ok("/api/Order/searchOpen", {"accountId": sim.account_id})["orders"] == []
    orders = rest.ok("/api/Order/search", {"accountId": sim.account_id, "startTimestamp": iso_ago(sim)})["orders"]
    assert {o["id"]: o["status"] for o in orders} == {mkt_id: 2, lim_id: 2, stop_id: 2}
    trades = rest.ok("/api/Trade/search", {"accountId": sim.account_id, "startTimestamp": iso_ago(sim)})["trades"]
    assert [t["orderId"] for t in trades] == [mkt_id, lim_id, stop_id]
    assert all(set(t) >= USER_TRADE_FIELDS for t in trades)
    assert sum(t["profitAndLoss"] or 0 for t in trades) == pytest.approx(1.25)


def test_close_contract_leaves_working_orders_and_partial_close(sim):
    rest = Rest(sim)
    set_market(sim, 5000.00)
    rest.place(MARKET, BUY, 3)
    stop_id = rest.place(STOP, SELL, 3, stopPrice=4990.00)["orderId"]
    body = {"accountId": sim.account_id, "contractId": sim.contract_id}
    j = rest.post("/api/Position/partialCloseContract", {**body, "size": 5}).json()
    assert (j["success"], j["errorCode"]) == (False, 5)                 # InvalidCloseSize
    rest.ok("/api/Position/partialCloseContract", {**body, "size": 1})
    (p,) = rest.ok("/api/Position/searchOpen", {"accountId": sim.account_id})["positions"]
    assert p["size"] == 2 and p["type"] == 1
    rest.ok("/api/Position/closeContract", body)
    assert rest.ok("/api/Position/searchOpen", {"accountId": sim.account_id})["positions"] == []
    # the protective stop is still working (the real service does not cancel it either)
    assert [o["id"] for o in rest.ok("/api/Order/searchOpen", {"accountId": sim.account_id})["orders"]] == [stop_id]
    j = rest.post("/api/Position/closeContract", body).json()
    assert (j["success"], j["errorCode"]) == (False, 2)                 # PositionNotFound
    rest.ok("/api/Order/cancel", {"accountId": sim.account_id, "orderId": stop_id})
    j = rest.post("/api/Order/cancel", {"accountId": sim.account_id, "orderId": stop_id}).json()
    assert (j["success"], j["errorCode"]) == (False, 2)


def test_modify_moves_a_working_order(sim):
    rest = Rest(sim)
    set_market(sim, 5000.00)
    oid = rest.place(LIMIT, BUY, 1, limitPrice=4995.00)["orderId"]
    rest.ok("/api/Order/modify", {"accountId": sim.account_id, "orderId": oid, "limitPrice": 4996.00, "size": 2})
    (o,) = rest.ok("/api/Order/searchOpen", {"accountId": sim.account_id})["orders"]
    assert (o["limitPrice"], o["size"]) == (4996.0, 2)
    j = rest.post("/api/Order/modify", {"accountId": sim.account_id, "orderId": 12345, "size": 1}).json()
    assert (j["success"], j["errorCode"]) == (False, 2)                 # OrderNotFound
    for bad in ({"limitPrice": -1.0}, {"limitPrice": 4996.1}, {"size": 0}):
        j = rest.post("/api/Order/modify", {"accountId": sim.account_id, "orderId": oid, **bad}).json()
        assert (j["success"], j["errorCode"]) == (False, 3), bad          # Rejected (2 is OrderNotFound here)
    # moved to a marketable price it fills at the ask
    rest.ok("/api/Order/modify", {"accountId": sim.account_id, "orderId": oid, "limitPrice": 5001.00})
    (p,) = rest.ok("/api/Position/searchOpen", {"accountId": sim.account_id})["positions"]
    assert (p["size"], p["averagePrice"]) == (2, 5000.25)


def test_pause_holds_the_tape_and_resume_does_not_burst(tmp_path):
    with SimProcess(tmp_path / "sim", speed=20, start_at="2026-11-23T10:30:00") as sim:
        wait_for(lambda: sim.state()["stats"].get("ticks", 0) > 5, 10, what="ticks")
        sim.control("pause")
        before = sim.state()
        time.sleep(2.0)
        mid = sim.state()
        assert mid["stats"]["ticks"] == before["stats"]["ticks"] and mid["market"]["now_ns"] == before["market"]["now_ns"]
        sim.control("resume")
        time.sleep(0.5)
        after = sim.state()
        # 0.5 s at 20x is ~10 s of data; a tape that kept running would jump ~50 s
        assert (after["market"]["now_ns"] - before["market"]["now_ns"]) / 1e9 < 25


# --------------------------------------------------------------------------
# faults, from the client side
# --------------------------------------------------------------------------

def test_drop_ws_close_seen_and_subscriptions_lost(sim):
    raw = RawHub(sim, "market")
    ev = Events()
    hub = market_client(sim, ev, trades=False)
    try:
        raw.send({"type": 1, "target": "SubscribeContractQuotes", "arguments": [sim.contract_id]})
        started(hub)
        assert invocations(raw.records(3, until=lambda r: isinstance(r, dict) and r.get("type") == 1),
                           "GatewayQuote")
        reconnects = hub.stats["connects"]
        assert sim.control("drop_ws")["dropped"] == 2

        recs = raw.records(3, until=lambda r: isinstance(r, dict) and r.get("type") == 7)
        close = [r for r in recs if isinstance(r, dict) and r.get("type") == 7]
        assert close and close[0]["allowReconnect"] is True and "error" in close[0]
        assert raw.recv_raw(2) is None and raw.closed                      # the socket is gone

        # a fresh connection that does not re-subscribe gets nothing: subscriptions did not survive
        again = RawHub(sim, "market")
        try:
            assert invocations(again.records(1.5), "GatewayQuote") == []
            conns = [c for c in sim.state()["connections"] if c["hub"] == "market"]
            assert any(not any(c["subs"].values()) for c in conns)
        finally:
            again.close()

        # the pipeline's client sees the close, reconnects, re-subscribes and gets quotes again
        wait_for(lambda: hub.stats["connects"] > reconnects and hub.connected, 10, what="hub reconnect")
        assert hub.stats["closed"] >= 1
        n = ev.count("GatewayQuote")
        wait_for(lambda: ev.count("GatewayQuote") > n + 3, 10, what="quotes after reconnect")
    finally:
        hub.stop()
        raw.close()


def test_delay_and_timeout_answer_late_and_the_order_still_exists(sim):
    rest = Rest(sim)
    set_market(sim, 5000.00)
    sim.control("delay", ms=600, path="/api/Account/search", count=1)
    t0 = time.monotonic()
    rest.ok("/api/Account/search", {"onlyActiveAccounts": True})
    assert time.monotonic() - t0 >= 0.55
    t0 = time.monotonic()
    rest.ok("/api/Account/search", {"onlyActiveAccounts": True})       # count=1: only once
    assert time.monotonic() - t0 < 0.5

    sim.control("timeout", seconds=3, path="/api/Order/place")
    with pytest.raises(requests.Timeout):
        rest.post("/api/Order/place", {"accountId": sim.account_id, "contractId": sim.contract_id,
                                       "type": LIMIT, "side": BUY, "size": 1, "limitPrice": 4990.0,
                                       "customTag": "late-1"}, timeout=0.5)
    # the client timed out but the order exists: reconcile by customTag
    opened = rest.ok("/api/Order/searchOpen", {"accountId": sim.account_id})["orders"]
    assert [o["customTag"] for o in opened] == ["late-1"]
    # and resending the same intent is refused as a duplicate tag
    j = rest.place(LIMIT, BUY, 1, limitPrice=4990.0, customTag="late-1")
    assert (j["success"], j["errorCode"]) == (False, 2)


@pytest.mark.parametrize("status", [429, 500])
def test_http_error_fault(sim, status):
    rest = Rest(sim)
    set_market(sim, 5000.00)
    sim.control("http_error", status=status, count=2, path="/api/Order/place")
    for _ in range(2):
        r = rest.post("/api/Order/place", {"accountId": sim.account_id, "contractId": sim.contract_id,
                                           "type": MARKET, "side": BUY, "size": 1})
        assert r.status_code == status
    assert sim.state()["orders"] == []                          # answered without processing
    assert rest.ok("/api/Account/search", {"onlyActiveAccounts": True})     # other paths untouched
    assert rest.place(MARKET, BUY, 1)["success"] is True
    assert len(sim.state()["orders"]) == 1


def test_rate_limit_answers_429(tmp_path):
    with SimProcess(tmp_path / "sim", speed=5, rate_limit_per_min=5) as sim:
        rest = Rest(sim)
        codes = [rest.post("/api/Account/search", {"onlyActiveAccounts": True}).status_code for _ in range(7)]
        assert codes == [200] * 5 + [429] * 2
        assert sim.state()["stats"]["http_429"] == 2


def test_reject_orders_still_returns_an_order_id(sim):
    rest = Rest(sim)
    set_market(sim, 5000.00)
    ev = Events()
    user = user_client(sim, ev)
    try:
        started(user)
        wait_for(subscribed(sim, "user", "orders"), 5, what="user subscriptions")
        sim.control("reject_orders", count=2, code=3, message="Insufficient funds")
        ids = []
        for _ in range(2):
            j = rest.place(MARKET, BUY, 1)
            assert (j["success"], j["errorCode"], j["errorMessage"]) == (False, 3, "Insufficient funds")
            assert isinstance(j["orderId"], int) and j["orderId"] > 0
            ids.append(j["orderId"])
        j = rest.place(MARKET, BUY, 1)
        assert j["success"] is True and j["orderId"] not in ids
        wait_for(lambda: len([p for p in ev.data("GatewayUserOrder") if p["data"]["id"] in ids]) == 2, 5,
                 what="rejected order events")
        assert {p["data"]["status"] for p in ev.data("GatewayUserOrder") if p["data"]["id"] in ids} == {5}
    finally:
        user.stop()
    orders = {o["id"]: o["status"] for o in sim.state()["orders"]}
    assert [orders[i] for i in ids] == [5, 5]
    assert not [t for t in sim.state()["trades"] if t["orderId"] in ids]


def test_partial_fill_fault(sim):
    rest = Rest(sim)
    set_market(sim, 5000.00)
    ev = Events()
    user = user_client(sim, ev)
    try:
        started(user)
        wait_for(subscribed(sim, "user", "trades"), 5, what="user subscriptions")
        sim.control("partial_fill", fill=1)
        oid = rest.place(MARKET, BUY, 3)["orderId"]
        wait_for(lambda: ev.count("GatewayUserTrade") >= 1, 5, what="first partial fill")
        time.sleep(0.2)
        o = [p["data"] for p in ev.data("GatewayUserOrder") if p["data"]["id"] == oid][-1]
        assert (o["status"], o["fillVolume"], o["size"]) == (1, 1, 3)
        assert ev.data("GatewayUserPosition")[-1]["data"]["size"] == 1
        set_market(sim, 5000.25)
        wait_for(lambda: ev.count("GatewayUserTrade") >= 2, 5, what="rest of the fill")
        o = [p["data"] for p in ev.data("GatewayUserOrder") if p["data"]["id"] == oid][-1]
        assert (o["status"], o["fillVolume"]) == (2, 3)
        assert o["filledPrice"] == pytest.approx((5000.25 + 2 * 5000.50) / 3)
        assert [t["data"]["size"] for t in ev.data("GatewayUserTrade")] == [1, 2]
        wait_for(lambda: ev.data("GatewayUserPosition")[-1]["data"]["size"] == 3, 5, what="position of 3")
    finally:
        user.stop()


def test_expire_tokens_gives_401_on_rest_and_hubs(sim):
    rest = Rest(sim)
    old = rest.tok
    rest.ok("/api/Account/search", {"onlyActiveAccounts": True})
    time.sleep(0.01)
    sim.control("expire_tokens")
    assert rest.post("/api/Account/search", {"onlyActiveAccounts": True}).status_code == 401
    assert rest.post("/api/Auth/validate", {}).status_code == 401
    with pytest.raises(Exception) as exc:
        ws_connect(f"ws://127.0.0.1:{sim.port}/hubs/user?access_token={old}", open_timeout=5)
    assert "401" in str(exc.value)
    time.sleep(0.01)
    rest.tok = sim.token()                  # logging in again works
    rest.ok("/api/Account/search", {"onlyActiveAccounts": True})


def test_missing_or_garbled_bearer_is_401(shared_sim):
    rest = Rest(shared_sim)
    assert rest.post("/api/Account/search", {"onlyActiveAccounts": True}, token=None).status_code == 401
    assert rest.post("/api/Account/search", {"onlyActiveAccounts": True}, token="abc.def.ghi").status_code == 401
    forged = rest.tok.rsplit(".", 1)[0] + ".AAAA"
    assert rest.post("/api/Order/searchOpen", {"accountId": shared_sim.account_id}, token=forged).status_code == 401


def test_expired_exp_claim_is_401(tmp_path):
    with SimProcess(tmp_path / "sim", speed=5, token_ttl_s=1) as sim:
        rest = Rest(sim)
        assert jwt_claims(rest.tok)["exp"] - time.time() <= 1.5
        rest.ok("/api/Account/search", {"onlyActiveAccounts": True})
        time.sleep(2.1)
        assert rest.post("/api/Account/search", {"onlyActiveAccounts": True}).status_code == 401


def test_stall_stops_quotes_for_n_seconds(sim):
    raw = RawHub(sim, "market")
    try:
        raw.send({"type": 1, "target": "SubscribeContractQuotes", "arguments": [sim.contract_id]})
        assert invocations(raw.records(3, until=lambda r: isinstance(r, dict) and r.get("type") == 1),
                           "GatewayQuote")
        sim.control("stall", seconds=2)
        t0 = time.monotonic()
        raw.records(0.3)                            # what was already queued
        quiet = raw.records(1.2)
        assert invocations(quiet, "GatewayQuote") == []
        got = raw.records(4, until=lambda r: isinstance(r, dict) and r.get("target") == "GatewayQuote")
        assert invocations(got, "GatewayQuote")
        assert time.monotonic() - t0 >= 1.8
    finally:
        raw.close()


def test_garbage_record_arrives_and_the_pipeline_client_survives(sim):
    raw = RawHub(sim, "market")
    ev = Events()
    hub = market_client(sim, ev, trades=False)
    try:
        raw.send({"type": 1, "target": "SubscribeContractQuotes", "arguments": [sim.contract_id]})
        started(hub)
        wait_for(lambda: ev.count("GatewayQuote") >= 2, 10, what="quotes")
        sim.control("garbage", hub="market", frame="}{ not json")
        recs = raw.records(3, until=lambda r: r == "}{ not json")
        assert "}{ not json" in recs
        wait_for(lambda: hub.stats["bad_frames"] >= 1, 5, what="bad frame counted")
        n = ev.count("GatewayQuote")
        wait_for(lambda: ev.count("GatewayQuote") > n + 2, 10, what="quotes after the garbage")
        assert hub.stats["closed"] == 0
    finally:
        hub.stop()
        raw.close()


def test_garbage_from_the_client_closes_that_connection_only(sim):
    bad = RawHub(sim, "market")
    good = RawHub(sim, "market")
    try:
        bad.send("this is not json")
        rec = bad.recv(3)
        assert rec["type"] == 7 and rec["error"]
        assert bad.recv_raw(2) is None
        good.send({"type": 1, "target": "SubscribeContractQuotes", "arguments": [sim.contract_id],
                   "invocationId": "1"})
        recs = good.records(3, until=lambda r: isinstance(r, dict) and r.get("type") == 1)
        assert invocations(recs, "GatewayQuote")
        assert sim.state()["stats"]["hub_garbage"] == 1
    finally:
        bad.close()
        good.close()


# --------------------------------------------------------------------------
# malformed requests: the documented error, never a crash
# --------------------------------------------------------------------------

A, C = 26000001, "CON.F.US.MES.Z26"    # the front month on the shared sim's market day, 2026-11-23
PLACE = {"accountId": A, "contractId": C, "type": LIMIT, "side": BUY, "size": 1, "limitPrice": 1000.0}

# (id, path, body or raw bytes, expected HTTP status, expected errorCode when 200, orderId expected)
MALFORMED = [
    ("garbage json", "/api/Order/place", b"{not json", 400, None, False),
    ("json array", "/api/Order/place", b"[1, 2]", 400, None, False),
    ("non-utf8", "/api/Order/place", b"\xff\xfe\x00", 400, None, False),
    ("missing accountId", "/api/Order/place", {k: v for k, v in PLACE.items() if k != "accountId"}, 400, None, False),
    ("missing size", "/api/Order/place", {k: v for k, v in PLACE.items() if k != "size"}, 400, None, False),
    ("size as string", "/api/Order/place", {**PLACE, "size": "one"}, 400, None, False),
    ("size as bool", "/api/Order/place", {**PLACE, "size": True}, 400, None, False),
    ("contractId as int", "/api/Order/place", {**PLACE, "contractId": 5}, 400, None, False),
    ("price not a number", "/api/Order/place", {**PLACE, "limitPrice": "abc"}, 400, None, False),
    ("price as list", "/api/Order/place", {**PLACE, "limitPrice": [1]}, 400, None, False),
    ("unknown account", "/api/Order/place", {**PLACE, "accountId": 1}, 200, 1, False),
    ("unknown contract", "/api/Order/place", {**PLACE, "contractId": "CON.F.US.XYZ.H26"}, 200, 8, False),
    ("garbled contract", "/api/Order/place", {**PLACE, "contractId": "hello"}, 200, 8, False),
    ("expired contract", "/api/Order/place", {**PLACE, "contractId": "CON.F.US.MES.H26"}, 200, 9, False),
    ("unlisted contract", "/api/Order/place", {**PLACE, "contractId": "CON.F.US.EP.Z26"}, 200, 8, False),
    ("far month not listed", "/api/Order/place", {**PLACE, "contractId": "CON.F.US.MES.U27"}, 200, 8, False),
    ("order above max size", "/api/Order/place", {**PLACE, "size": 500}, 200, 2, True),
    ("bar unit 0", "/api/History/retrieveBars",
     {"contractId": C, "live": False, "startTime": "2026-01-01T00:00:00Z", "endTime": "2026-01-02T00:00:00Z",
      "unit": 0, "unitNumber": 1, "limit": 10, "includePartialBar": False}, 200, 2, False),
    ("size 0", "/api/Order/place", {**PLACE, "size": 0}, 200, 2, True),
    ("negative size", "/api/Order/place", {**PLACE, "size": -3}, 200, 2, True),
    ("negative price", "/api/Order/place", {**PLACE, "limitPrice": -5.0}, 200, 2, False),
    ("zero stop price", "/api/Order/place", {**PLACE, "type": STOP, "stopPrice": 0}, 200, 2, False),
    ("off-tick price", "/api/Order/place", {**PLACE, "limitPrice": 1000.1}, 200, 2, False),
    ("limit without price", "/api/Order/place", {k: v for k, v in PLACE.items() if k != "limitPrice"}, 200, 2, True),
    ("stop without price", "/api/Order/place", {**PLACE, "type": STOP}, 200, 2, True),
    ("unknown type", "/api/Order/place", {**PLACE, "type": 99}, 200, 2, True),
    ("bad side", "/api/Order/place", {**PLACE, "side": 7}, 200, 2, True),
    ("bracket in position mode", "/api/Order/place",
     {**PLACE, "stopLossBracket": {"ticks": -8, "type": 4}}, 200, 2, False),
    ("cancel missing orderId", "/api/Order/cancel", {"accountId": A}, 400, None, False),
    ("cancel unknown order", "/api/Order/cancel", {"accountId": A, "orderId": 42}, 200, 2, False),
    ("cancel orderId string", "/api/Order/cancel", {"accountId": A, "orderId": "x"}, 400, None, False),
    ("search bad timestamp", "/api/Order/search", {"accountId": A, "startTimestamp": "yesterday"}, 400, None, False),
    ("search missing start", "/api/Trade/search", {"accountId": A}, 400, None, False),
    ("search bad endTimestamp", "/api/Order/search",
     {"accountId": A, "startTimestamp": "2026-01-01T00:00:00Z", "endTimestamp": "garbage"}, 400, None, False),
    ("trades endTimestamp int", "/api/Trade/search",
     {"accountId": A, "startTimestamp": "2026-01-01T00:00:00Z", "endTimestamp": 12345}, 400, None, False),
    ("trades endTimestamp month 13", "/api/Trade/search",
     {"accountId": A, "startTimestamp": "2026-01-01T00:00:00Z", "endTimestamp": "2026-13-01T00:00:00Z"},
     400, None, False),
    ("account search wrong type", "/api/Account/search", {"onlyActiveAccounts": "yes"}, 400, None, False),
    ("contract by id unknown", "/api/Contract/searchById", {"contractId": "CON.F.US.XYZ.Z99"}, 200, 1, False),
    ("contract search missing live", "/api/Contract/search", {"searchText": "MES"}, 400, None, False),
    ("close unknown position", "/api/Position/closeContract", {"accountId": A, "contractId": C}, 200, 2, False),
    ("partial close size 0", "/api/Position/partialCloseContract",
     {"accountId": A, "contractId": C, "size": 0}, 200, 2, False),
    ("bars unknown contract", "/api/History/retrieveBars",
     {"contractId": "CON.F.US.XYZ.H26", "live": False, "startTime": "2026-01-01T00:00:00Z",
      "endTime": "2026-01-02T00:00:00Z", "unit": 2, "unitNumber": 1, "limit": 10, "includePartialBar": False},
     200, 1, False),
    ("unknown endpoint", "/api/Nope/nothing", {}, 404, None, False),
]


@pytest.mark.parametrize("path, body, status, code, has_id", [m[1:] for m in MALFORMED],
                         ids=[m[0] for m in MALFORMED])
def test_malformed_request_gets_documented_error(shared_sim, path, body, status, code, has_id):
    rest = Rest(shared_sim)
    r = rest.post(path, raw=body) if isinstance(body, bytes) else rest.post(path, body)
    assert r.status_code == status, r.text
    if status == 200:
        j = r.json()
        assert j["success"] is False and j["errorCode"] == code and isinstance(j["errorMessage"], str), j
        if has_id:
            assert isinstance(j.get("orderId"), int)
            assert any(o["id"] == j["orderId"] and o["status"] == 5 for o in shared_sim.state()["orders"])
    elif status == 400:
        assert r.json()["status"] == 400                    # ProblemDetails, not the envelope
    # the simulator still answers
    assert rest.ok("/api/Account/search", {"onlyActiveAccounts": False})["accounts"]


def test_duplicate_custom_tag_is_error_code_2(shared_sim):
    rest = Rest(shared_sim)
    tag = f"dup-{time.time_ns()}"
    first = rest.place(LIMIT, BUY, 1, limitPrice=1000.0, customTag=tag)
    assert first["success"] is True
    second = rest.place(LIMIT, BUY, 1, limitPrice=1000.0, customTag=tag)
    assert (second["success"], second["errorCode"]) == (False, 2) and tag in second["errorMessage"]
    rest.ok("/api/Order/cancel", {"accountId": A, "orderId": first["orderId"]})
    assert rest.place(LIMIT, BUY, 1, limitPrice=1000.0, customTag=tag)["errorCode"] == 2   # unique forever


def test_sim_survives_a_burst_of_malformed_frames_and_bodies(shared_sim):
    rest = Rest(shared_sim)
    for raw in (b"", b"null", b"\"str\"", b"{" * 1000, b"{\"accountId\": 1e999}", json.dumps({"a": [1] * 10_000}).encode()):
        r = rest.post("/api/Order/place", raw=raw)
        assert r.status_code in (200, 400), (raw[:20], r.status_code)
    # one connection per record: the server may close a connection after a malformed record
    # (as the real hub does), and a send racing that close would fail the test, not the server
    for rec in ('{"type": 1}', '{"type": 1, "target": 5}', '{"type": 99}', '{"type": 1, "target": '
                '"SubscribeOrders", "arguments": "x", "invocationId": "1"}', "[]"):
        hub = RawHub(shared_sim, "user")
        try:
            hub.send(rec)
            hub.records(0.3)
        finally:
            hub.close()
    assert rest.ok("/api/Account/search", {"onlyActiveAccounts": True})
    assert shared_sim.proc.poll() is None


@pytest.mark.parametrize("record", [
    '{"type":1,"target":["SubscribeOrders"],"arguments":[26000001],"invocationId":"1"}',
    '{"type":1,"target":"SubscribeOrders","arguments":{"a":1},"invocationId":"2"}',
    '{"type":1,"target":"SubscribeOrders","arguments":5,"invocationId":"3"}',
    '{"type":1,"target":null,"arguments":[]}',
], ids=["target list", "arguments object", "arguments int", "target null"])
def test_malformed_invocation_closes_with_an_error_message(shared_sim, record):
    hub = RawHub(shared_sim, "user")
    try:
        hub.send(record)
        recs = hub.records(3, until=lambda r: isinstance(r, dict) and r.get("type") == 7)
        assert recs and recs[-1]["type"] == 7 and "error" in recs[-1]
        assert hub.recv_raw(2) is None and hub.closed
    finally:
        hub.close()
    good = RawHub(shared_sim, "user")        # the hub still serves others
    try:
        good.send({"type": 1, "target": "SubscribeOrders", "arguments": [shared_sim.account_id], "invocationId": "9"})
        done = good.records(3, until=lambda r: isinstance(r, dict) and r.get("type") == 3)
        assert done and done[-1]["invocationId"] == "9" and "error" not in done[-1]
    finally:
        good.close()


def test_price_control_trade_prints_on_the_market_hub_and_fills_a_limit(sim):
    rest = Rest(sim)
    set_market(sim, 5000.00, 5000.25)
    raw = RawHub(sim, "market")
    try:
        for target in ("SubscribeContractQuotes", "SubscribeContractTrades"):
            raw.send({"type": 1, "target": target, "arguments": [sim.contract_id], "invocationId": target})
        raw.records(2, until=lambda r: isinstance(r, dict) and r.get("invocationId") == "SubscribeContractTrades")
        oid = rest.place(LIMIT, BUY, 1, limitPrice=4999.50)["orderId"]
        # quote stays above the limit; a trade prints at the limit (touch): the limit fills there
        sim.control("price", bid=4999.75, ask=5000.00, last=4999.50)
        recs = raw.records(3, until=lambda r: isinstance(r, dict) and r.get("target") == "GatewayQuote")
        (tr,) = invocations(recs, "GatewayTrade")
        cid, trades = tr["arguments"]
        assert cid == sim.contract_id and trades[0]["price"] == 4999.5 and trades[0]["type"] == 1
        assert set(trades[0]) >= TRADE_FIELDS
        (q,) = invocations(recs, "GatewayQuote")
        assert (q["arguments"][1]["bestBid"], q["arguments"][1]["lastPrice"]) == (4999.75, 4999.5)
        (t,) = rest.ok("/api/Trade/search", {"accountId": sim.account_id, "startTimestamp": iso_ago(sim)})["trades"]
        assert (t["orderId"], t["price"]) == (oid, 4999.5)
    finally:
        raw.close()


# --------------------------------------------------------------------------
# REST as documented: contracts, bars, null fields, limits
# --------------------------------------------------------------------------

def test_contract_list_is_front_and_next_month_on_the_market_clock(shared_sim):
    """Market day 2026-11-23: MES Z26 (expires 2026-12-18) is the front month, H27 the next.
    What is listed can be traded; an expired month is found by id with activeContract false."""
    rest = Rest(shared_sim)
    avail = rest.ok("/api/Contract/available", {"live": False})["contracts"]
    assert [c["id"] for c in avail] == ["CON.F.US.MES.Z26", "CON.F.US.MES.H27"]
    assert all(c["activeContract"] is True and set(c) >= CONTRACT_FIELDS for c in avail)
    assert avail[0]["description"].endswith("December 2026") and avail[1]["name"] == "MESH7"
    # live: true is a live (funded) account's list: this practice account has none
    assert rest.ok("/api/Contract/available", {"live": True})["contracts"] == []
    assert rest.ok("/api/Contract/search", {"searchText": "MES", "live": True})["contracts"] == []
    old = rest.ok("/api/Contract/searchById", {"contractId": "CON.F.US.MES.H26"})["contract"]
    assert old["activeContract"] is False
    # both listed months take orders (the next month trades on the same tape)
    for cid in ("CON.F.US.MES.Z26", "CON.F.US.MES.H27"):
        j = rest.place(LIMIT, BUY, 1, limitPrice=1000.0, contractId=cid)
        assert j["success"] is True, j
        rest.ok("/api/Order/cancel", {"accountId": A, "orderId": j["orderId"]})


def test_failure_answers_keep_their_fields_null(shared_sim):
    rest = Rest(shared_sim)
    cases = [("/api/Contract/searchById", {"contractId": "CON.F.US.XYZ.Z99"}, "contract"),
             ("/api/Order/search", {"accountId": 1, "startTimestamp": "2026-01-01T00:00:00Z"}, "orders"),
             ("/api/Order/searchOpen", {"accountId": 1}, "orders"),
             ("/api/Position/searchOpen", {"accountId": 1}, "positions"),
             ("/api/Trade/search", {"accountId": 1, "startTimestamp": "2026-01-01T00:00:00Z"}, "trades"),
             ("/api/Order/place", {**PLACE, "accountId": 1}, "orderId")]
    for path, body, key in cases:
        j = rest.post(path, body).json()
        assert j["success"] is False and key in j and j[key] is None, (path, j)


def test_order_size_and_position_limits_are_refused(tmp_path):
    with SimProcess(tmp_path / "sim", speed=20, rate_limit_per_min=100_000, max_order_size=5,
                    max_position_size=6) as sim:
        rest = Rest(sim)
        big = rest.place(LIMIT, BUY, 6, limitPrice=1000.0)
        assert (big["success"], big["errorCode"]) == (False, 2) and "maximum order size of 5" in big["errorMessage"]
        assert isinstance(big["orderId"], int)          # a rejection still carries an orderId
        first = rest.place(LIMIT, BUY, 4, limitPrice=1000.0)
        assert first["success"] is True
        # 4 working + 3 more on the same side = 7 > 6: refused; the other side is not added to it
        more = rest.place(LIMIT, BUY, 3, limitPrice=1000.0)
        assert (more["success"], more["errorCode"]) == (False, 2) and "Maximum position size" in more["errorMessage"]
        assert rest.place(LIMIT, SELL, 5, limitPrice=99999.0)["success"] is True
        assert [o["status"] for o in sim.state()["orders"] if o["id"] == more["orderId"]] == [5]


def _bars(rest: Rest, sim: SimProcess, unit: int, number: int, partial: bool, start: str, limit: int = 20000):
    body = {"contractId": sim.contract_id, "live": False, "startTime": start,
            "endTime": "2030-01-01T00:00:00Z", "unit": unit, "unitNumber": number, "limit": limit,
            "includePartialBar": partial}
    return rest.ok("/api/History/retrieveBars", body)["bars"]


def test_bars_every_unit_and_include_partial_bar(tmp_path):
    """Paused at a known market time: the partial bar is the one holding the market clock."""
    with SimProcess(tmp_path / "sim", speed=0, rate_limit_per_min=100_000, bars_rate_limit_per_30s=10_000,
                    start_at="2026-11-23T09:30:00") as sim:
        wait_for(lambda: sim.state()["stats"].get("ticks", 0) > 3000, 60, what="ticks")
        sim.control("pause")
        rest = Rest(sim)
        st = sim.state()["market"]
        now = datetime.fromisoformat(st["now"])
        start = "2026-11-23T00:00:00Z"
        for unit in (1, 2, 3, 4, 5, 6, 7):
            with_partial = _bars(rest, sim, unit, 1 if unit != 7 else 100, True, start)
            without = _bars(rest, sim, unit, 1 if unit != 7 else 100, False, start)
            assert with_partial, unit
            assert [b["t"] for b in with_partial] == sorted((b["t"] for b in with_partial), reverse=True)
            assert all(b["l"] <= min(b["o"], b["c"]) <= max(b["o"], b["c"]) <= b["h"] for b in with_partial)
            newest = datetime.fromisoformat(with_partial[0]["t"])
            if unit == 6:
                assert newest == datetime(2026, 11, 1, tzinfo=timezone.utc)     # a calendar month
            if unit != 7:
                # the bar holding the market clock (its last trade) is still forming: left out
                start_ns = datetime.fromisoformat(with_partial[0]["t"])
                assert start_ns <= now and without == with_partial[1:], unit
            else:           # tick bars: only a bar short of 100 trades is partial
                assert without in (with_partial, with_partial[1:])
