"""HubClient against a minimal in-process SignalR JSON hub (aiohttp): handshake, token in
the query string, re-subscribe after a drop, garbage frames skipped, fresh token per connect."""
from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest
from aiohttp import WSMsgType, web

from common.topstepx.hub import CONNECTED, HubClient, _with_token

RS = "\x1e"


def make_jwt(exp: float) -> str:
    import base64

    def b64(d: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")
    return f"{b64({'alg': 'none'})}.{b64({'exp': exp, 'n': time.monotonic_ns()})}.c2lnbmF0dXJl"


class FakeHub:
    """Just enough of the SignalR JSON protocol (and of TopstepX login) to exercise the
    hub client and the feed process before the simulator exists."""

    def __init__(self, token_life_s: float = 3600):
        self.token_life_s = token_life_s
        self.logins = 0
        self.tokens: list[str] = []
        self.invocations: list[tuple[str, list]] = []
        self.sockets: set[web.WebSocketResponse] = set()
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        app = web.Application()
        app.router.add_get("/hubs/market", self._ws)
        app.router.add_post("/api/Auth/loginKey", self._login)
        app.router.add_post("/api/Auth/validate", self._login)
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hubs/market"

    async def _login(self, request: web.Request) -> web.Response:
        self.logins += 1
        tok = make_jwt(time.time() + self.token_life_s)
        return web.json_response({"success": True, "errorCode": 0, "token": tok, "newToken": tok})

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        self.tokens.append(request.query.get("access_token", ""))
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.sockets.add(ws)
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                for rec in msg.data.split(RS):
                    if not rec:
                        continue
                    data = json.loads(rec)
                    if "protocol" in data:
                        await ws.send_str("{}" + RS)
                    elif data.get("type") == 1:
                        self.invocations.append((data["target"], data["arguments"]))
                        if data.get("invocationId"):
                            await ws.send_str(json.dumps({"type": 3, "invocationId": data["invocationId"],
                                                          "result": None}) + RS)
        finally:
            self.sockets.discard(ws)
        return ws

    def _call(self, coro_fn) -> None:
        asyncio.run_coroutine_threadsafe(coro_fn(), self.loop).result(5)

    def push(self, target: str, *args) -> None:
        text = json.dumps({"type": 1, "target": target, "arguments": list(args)}) + RS
        self.push_raw(text)

    def push_raw(self, text: str) -> None:
        async def go():
            for ws in list(self.sockets):
                await ws.send_str(text)
        self._call(go)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def drop_all(self) -> None:
        async def go():
            for ws in list(self.sockets):
                await ws.close()
        self._call(go)

    def close(self) -> None:
        self._call(self.runner.cleanup)
        self.loop.call_soon_threadsafe(self.loop.stop)


def wait_for(pred, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.01)
    raise AssertionError("timed out")


@pytest.fixture
def hub_server():
    s = FakeHub()
    yield s
    s.close()


def test_token_goes_into_query_string_replacing_an_old_one():
    url = _with_token("http://h/hubs/market?access_token=old&x=1", "new")
    assert "access_token=new" in url and "old" not in url and "x=1" in url


def test_connects_subscribes_receives_and_resubscribes_after_drop(hub_server):
    got: list = []
    raw: list = []
    states: list = []
    n = {"tok": 0}

    def token():
        n["tok"] += 1
        return f"tok{n['tok']}"

    hub = HubClient(hub_server.url, token,
                    subscriptions=lambda h: h.send("SubscribeContractQuotes", ["CON.F.US.MES.H26"]),
                    handlers={"GatewayQuote": got.append}, name="test",
                    on_state=lambda s, d: states.append(s),
                    on_raw=lambda t, a, ns: raw.append((t, a, ns)),
                    min_backoff_s=0.05, max_backoff_s=0.2)
    hub.start()
    try:
        wait_for(lambda: hub.state == CONNECTED and hub_server.invocations)
        assert hub_server.invocations[0] == ("SubscribeContractQuotes", ["CON.F.US.MES.H26"])
        assert hub_server.tokens == ["tok1"]
        hub_server.push("GatewayQuote", "CON.F.US.MES.H26", {"lastPrice": 5000.25})
        wait_for(lambda: got)
        assert got[0] == ["CON.F.US.MES.H26", {"lastPrice": 5000.25}]
        assert raw[0][0] == "GatewayQuote" and raw[0][2] > 0

        hub_server.drop_all()
        wait_for(lambda: len(hub_server.invocations) >= 2)
        assert hub_server.invocations[1][0] == "SubscribeContractQuotes"
        assert hub_server.tokens == ["tok1", "tok2"], "a fresh token on every connect"
        assert "reconnecting" in states
        wait_for(lambda: hub.state == CONNECTED)
        hub_server.push("GatewayQuote", "CON.F.US.MES.H26", {"lastPrice": 5000.5})
        wait_for(lambda: len(got) == 2)
    finally:
        hub.stop()
    assert hub.state == "stopped"


def test_on_frame_end_follows_every_invocation_of_its_frame(hub_server):
    """The feed publishes each event of a frame, then records them all at the frame's end."""
    seen: list = []
    hub = HubClient(hub_server.url, lambda: "t", name="test", min_backoff_s=0.05,
                    on_raw=lambda t, a, ns: seen.append(a[1]["n"]), on_frame_end=lambda: seen.append("end"))
    hub.start()
    try:
        wait_for(lambda: hub.state == CONNECTED)
        def one(n: int) -> str:
            return json.dumps({"type": 1, "target": "GatewayQuote", "arguments": ["CON.F.US.MES.H26", {"n": n}]}) + RS
        hub_server.push_raw(one(1) + one(2) + one(3))
        hub_server.push_raw(one(4))
        wait_for(lambda: seen.count("end") >= 2)
        assert seen[:6] == [1, 2, 3, "end", 4, "end"]
    finally:
        hub.stop()


def test_garbage_frames_are_counted_and_the_connection_survives(hub_server):
    got: list = []
    hub = HubClient(hub_server.url, lambda: "t", handlers={"GatewayTrade": got.append},
                    min_backoff_s=0.05)
    hub.start()
    try:
        wait_for(lambda: hub.state == CONNECTED)
        hub_server.push_raw("not json at all" + RS)
        hub_server.push_raw("[1,2,3]" + RS)
        hub_server.push_raw(json.dumps({"type": 1, "target": "GatewayTrade", "arguments": 5}) + RS)
        hub_server.push("GatewayTrade", "C", [{"price": 1}])
        wait_for(lambda: got)
        assert hub.stats["bad_frames"] == 3
        assert hub.stats["connects"] == 1, "garbage must not force a reconnect"
    finally:
        hub.stop()


def test_handler_exception_is_contained(hub_server):
    calls = []

    def boom(args):
        calls.append(args)
        raise ValueError("bad payload")

    hub = HubClient(hub_server.url, lambda: "t", handlers={"GatewayQuote": boom})
    hub.start()
    try:
        wait_for(lambda: hub.state == CONNECTED)
        hub_server.push("GatewayQuote", "C", {})
        hub_server.push("GatewayQuote", "C", {})
        wait_for(lambda: len(calls) == 2)
        assert hub.stats["handler_errors"] == 2 and hub.state == CONNECTED
    finally:
        hub.stop()


def test_force_reconnect_uses_a_new_token_and_resubscribes(hub_server):
    toks = iter(f"k{i}" for i in range(100))
    hub = HubClient(hub_server.url, lambda: next(toks),
                    subscriptions=lambda h: h.send("SubscribeContractTrades", ["X"]), min_backoff_s=0.01)
    hub.start()
    try:
        wait_for(lambda: hub.state == CONNECTED)
        hub.force_reconnect("token about to expire")
        wait_for(lambda: len(hub_server.invocations) == 2 and hub.state == CONNECTED)
        assert hub_server.tokens[:2] == ["k0", "k1"]
    finally:
        hub.stop()


def test_unreachable_server_backs_off_and_send_refuses():
    hub = HubClient("http://127.0.0.1:1/hubs/market", lambda: "t", min_backoff_s=0.01, max_backoff_s=0.05,
                    connect_timeout_s=1)
    hub.start()
    try:
        wait_for(lambda: hub.stats["connects"] >= 3)
        assert hub.state != CONNECTED
        with pytest.raises(ConnectionError):
            hub.send("SubscribeContractQuotes", ["X"])
    finally:
        hub.stop()
