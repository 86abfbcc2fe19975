"""The simulator's hubs behave as ASP.NET Core SignalR on Kestrel: KeepAliveInterval pings,
ClientTimeoutInterval, HandshakeTimeout, close at token expiry, WebSocket keep-alive control
frames, and the hub faults (silent, stop after handshake, half-close). Checked frame by frame
with a raw aiohttp WebSocket client (control frames visible) and with `pysignalr`, a
third-party client written for the real server. Intervals are shortened; the defaults are
checked in test_defaults_are_the_aspnet_core_ones."""
from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest
import requests

from services.sim.config import SimConfig
from tests.harness.sim import SimProcess

pytestmark = pytest.mark.integration
RS = "\x1e"


def test_defaults_are_the_aspnet_core_ones():
    c = SimConfig()
    assert (c.ping_interval_s, c.client_timeout_s, c.handshake_timeout_s) == (15, 30, 15)
    assert (c.ws_keepalive_s, c.ws_keepalive_timeout_s, c.close_on_token_expiry) == (120, 0, True)


def ws_url(sim: SimProcess, hub: str, token: str) -> str:
    return f"ws://127.0.0.1:{sim.port}/hubs/{hub}?access_token={token}"


async def records(ws, seconds: float, autopong: bool = True) -> list:
    """Everything that arrives for `seconds`: SignalR records as dicts, control frames as
    ("ping"|"pong", data), the end as ("closed", code)."""
    out: list = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            msg = await ws.receive(timeout=max(0.01, end - time.monotonic()))
        except asyncio.TimeoutError:
            break
        if msg.type == aiohttp.WSMsgType.TEXT:
            out += [json.loads(r) for r in msg.data.split(RS) if r]
        elif msg.type == aiohttp.WSMsgType.PING:
            out.append(("ping", msg.data))
            if autopong:
                await ws.pong(msg.data)
        elif msg.type == aiohttp.WSMsgType.PONG:
            out.append(("pong", msg.data))
        else:
            out.append(("closed", ws.close_code))
            break
    return out


async def connect(session, sim, hub="market", token=None, handshake=True):
    ws = await session.ws_connect(ws_url(sim, hub, token or sim.token()), autoping=False)
    if handshake:
        await ws.send_str(json.dumps({"protocol": "json", "version": 1}) + RS)
        first = await ws.receive(timeout=5)
        assert first.data == "{}" + RS
    return ws


@pytest.fixture(scope="module")
def fast_sim(tmp_path_factory):
    with SimProcess(tmp_path_factory.mktemp("sim"), speed=1, ping_interval_s=0.5, client_timeout_s=1.5,
                    handshake_timeout_s=1.0, ws_keepalive_s=0.7) as s:
        yield s


def test_server_pings_and_unsolicited_pongs_keep_a_pinging_client_connected(fast_sim):
    async def run():
        async with aiohttp.ClientSession() as session:
            ws = await connect(session, fast_sim)
            got: list = []
            for _ in range(8):                       # 4 s, more than twice the client timeout
                await ws.send_str('{"type":6}' + RS)
                got += await records(ws, 0.5)
            await ws.close()
            return got
    got = asyncio.run(run())
    assert ("closed", None) not in got and not any(isinstance(g, dict) and g.get("type") == 7 for g in got)
    pings = [g for g in got if g == {"type": 6}]
    pongs = [g for g in got if isinstance(g, tuple) and g[0] == "pong"]
    assert 6 <= len(pings) <= 10, f"a SignalR ping every 0.5 s: {len(pings)} in 4 s"
    assert 4 <= len(pongs) <= 7, f"an unsolicited WebSocket Pong every 0.7 s: {len(pongs)} in 4 s"


def test_a_client_that_sends_nothing_is_closed_with_a_close_message(fast_sim):
    async def run():
        async with aiohttp.ClientSession() as session:
            ws = await connect(session, fast_sim)
            t0 = time.monotonic()
            got = await records(ws, 5)
            return got, time.monotonic() - t0
    got, took = asyncio.run(run())
    closes = [g for g in got if isinstance(g, dict) and g.get("type") == 7]
    assert closes and "ClientTimeoutInterval" in closes[0]["error"]
    assert got[-1][0] == "closed"
    assert 1.4 <= took <= 2.5, f"closed after the 1.5 s client timeout, not {took:.2f} s"
    assert fast_sim.state()["stats"]["hub_client_timeouts"] >= 1


def test_a_connection_without_the_signalr_handshake_is_dropped(fast_sim):
    async def run():
        async with aiohttp.ClientSession() as session:
            ws = await connect(session, fast_sim, handshake=False)
            t0 = time.monotonic()
            got = await records(ws, 5)
            return got, time.monotonic() - t0
    got, took = asyncio.run(run())
    assert got and got[-1][0] == "closed"
    assert not any(isinstance(g, dict) for g in got), "no ping and no close message before a handshake"
    assert 0.9 <= took <= 2.0


def test_client_websocket_pings_are_answered(fast_sim):
    async def run():
        async with aiohttp.ClientSession() as session:
            ws = await connect(session, fast_sim)
            await ws.ping(b"are-you-there")
            got = await records(ws, 0.5)
            await ws.close()
            return got
    assert ("pong", b"are-you-there") in asyncio.run(run())


def test_ping_mode_aborts_a_client_that_does_not_answer(tmp_path):
    with SimProcess(tmp_path / "sim", speed=1, ws_keepalive_s=0.5, ws_keepalive_timeout_s=1.0,
                    client_timeout_s=30) as sim:
        async def run(answer: bool):
            async with aiohttp.ClientSession() as session:
                ws = await connect(session, sim)
                got = []
                for _ in range(6):                   # 3 s
                    await ws.send_str('{"type":6}' + RS)
                    got += await records(ws, 0.5, autopong=answer)
                    if got and got[-1][0] == "closed":
                        break
                await ws.close()
                return got
        answered = asyncio.run(run(True))
        assert sum(1 for g in answered if g[0] == "ping") >= 4 and ("closed", None) not in answered
        assert not any(g[0] == "closed" for g in answered if isinstance(g, tuple))
        silent = asyncio.run(run(False))
        assert silent[-1][0] == "closed", "no Pong within 1 s: the connection is aborted"
        assert sim.state()["stats"]["hub_pong_timeouts"] == 1


def test_token_expiry_closes_the_hub_refuses_the_reconnect_and_rest(tmp_path):
    with SimProcess(tmp_path / "sim", speed=1, token_ttl_s=2, client_timeout_s=30) as sim:
        tok = sim.token()

        async def run():
            async with aiohttp.ClientSession() as session:
                ws = await connect(session, sim, hub="user", token=tok)
                got = []
                t0 = time.monotonic()
                while time.monotonic() - t0 < 5 and not (got and got[-1][0] == "closed"):
                    await ws.send_str('{"type":6}' + RS)
                    got += await records(ws, 0.3)
                took = time.monotonic() - t0
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    await session.ws_connect(ws_url(sim, "user", tok))
                return got, took, refused.value.status
        got, took, status = asyncio.run(run())
        assert any(isinstance(g, dict) and g.get("type") == 7 for g in got), "a close message"
        assert got[-1][0] == "closed" and took <= 3.0
        assert status == 401
        r = requests.post(f"{sim.base_url}/api/Account/search", json={"onlyActiveAccounts": True},
                          headers={"Authorization": f"Bearer {tok}"}, timeout=5)
        assert r.status_code == 401
        assert sim.state()["stats"]["hub_token_expired"] == 1


def test_hub_faults_silent_stop_after_handshake_and_half_close(fast_sim):
    sim = fast_sim

    async def run():
        async with aiohttp.ClientSession() as session:
            # silent: TCP open, nothing comes (no pings either) while the client keeps pinging
            ws = await connect(session, sim)
            await ws.send_str(json.dumps({"type": 1, "target": "SubscribeContractQuotes",
                                          "arguments": [sim.contract_id]}) + RS)
            await records(ws, 0.6)
            assert sim.control("hub_silent", hub="market")["connections"] >= 1
            silent = []
            for _ in range(6):
                await ws.send_str('{"type":6}' + RS)
                silent += await records(ws, 0.5)
            assert silent == [], f"a silent hub sends nothing: {silent[:3]}"
            assert not ws.closed
            await ws.close()
            # stop after the handshake: the handshake answer, then nothing (not even a completion)
            sim.control("stop_after_handshake", hub="market", count=1)
            ws = await connect(session, sim)
            await ws.send_str(json.dumps({"type": 1, "invocationId": "1", "target": "SubscribeContractQuotes",
                                          "arguments": [sim.contract_id]}) + RS)
            after = []
            for _ in range(4):
                await ws.send_str('{"type":6}' + RS)
                after += await records(ws, 0.5)
            assert after == []
            await ws.close()
            # the next connection is normal again
            ws = await connect(session, sim)
            await ws.send_str(json.dumps({"type": 1, "invocationId": "2", "target": "SubscribeContractQuotes",
                                          "arguments": [sim.contract_id]}) + RS)
            normal = await records(ws, 1.0)
            assert {"type": 3, "invocationId": "2", "result": None} in normal
            # half-close: a FIN without a close frame
            sim.control("half_close", hub="market")
            end = await records(ws, 3.0)
            assert end and end[-1][0] == "closed"
            assert not any(isinstance(g, dict) and g.get("type") == 7 for g in end), "no close message"
            await ws.close()
    asyncio.run(run())


# ---------------------------------------------------------------- pysignalr, a third-party client

def _pysignalr_session(sim: SimProcess, token: str, seconds: float, **client_kw) -> dict:
    """Run a pysignalr market client for `seconds` (token in the URL, as TopstepX documents:
    pysignalr's access_token_factory only reaches the server after its negotiation); what it saw."""
    from pysignalr.client import SignalRClient
    from pysignalr.exceptions import AuthorizationError

    seen = {"quotes": 0, "opens": 0, "closes": 0, "error": None}

    async def run() -> None:
        client = SignalRClient(f"{sim.market_hub_url}?access_token={token}", retry_count=2, retry_sleep=0.2,
                               **client_kw)

        async def on_quote(args):
            seen["quotes"] += 1

        async def on_open():
            seen["opens"] += 1
            await client.send("SubscribeContractQuotes", [sim.contract_id])

        async def on_close():
            seen["closes"] += 1
        client.on("GatewayQuote", on_quote)
        client.on_open(on_open)
        client.on_close(on_close)
        task = asyncio.create_task(client.run())
        try:
            await asyncio.wait_for(asyncio.shield(task), seconds)
        except asyncio.TimeoutError:
            pass
        except AuthorizationError as exc:
            seen["error"] = f"AuthorizationError {exc}"
        except Exception as exc:
            seen["error"] = f"{type(exc).__name__} {exc}"
        finally:
            task.cancel()
            try:
                await task
            except BaseException:
                pass
    asyncio.run(run())
    return seen


def test_pysignalr_keep_alive_holds_the_connection(tmp_path):
    with SimProcess(tmp_path / "sim", speed=1, ping_interval_s=0.5, client_timeout_s=1.5, ws_keepalive_s=0.5,
                    ws_keepalive_timeout_s=2.0) as sim:
        tok = sim.token()
        # pysignalr pings (SignalR every 1 s, WebSocket every 1 s; it answers the sim's WS pings)
        seen = _pysignalr_session(sim, tok, 5.0, signalr_ping_interval=1, ping_interval=1)
        assert seen["opens"] == 1 and seen["closes"] == 0 and seen["error"] is None, seen
        assert seen["quotes"] > 0
        stats = sim.state()["stats"]
        assert not stats.get("hub_client_timeouts") and not stats.get("hub_pong_timeouts")


def test_pysignalr_that_pings_too_rarely_is_timed_out(tmp_path):
    with SimProcess(tmp_path / "sim", speed=1, ping_interval_s=0.5, client_timeout_s=1.5) as sim:
        tok = sim.token()
        seen = _pysignalr_session(sim, tok, 4.0, signalr_ping_interval=60, ping_interval=60)
        # pysignalr raises the server's close message, as against the real server
        assert seen["opens"] == 1 and "ClientTimeoutInterval" in (seen["error"] or ""), seen["error"]
        assert sim.state()["stats"]["hub_client_timeouts"] >= 1


def test_pysignalr_with_an_expired_token_is_closed_then_refused(tmp_path):
    with SimProcess(tmp_path / "sim", speed=1, token_ttl_s=2, client_timeout_s=30) as sim:
        tok = sim.token()
        seen = _pysignalr_session(sim, tok, 8.0, signalr_ping_interval=1)
        assert seen["opens"] == 1
        assert seen["error"] and "Authorization" in seen["error"], seen
        assert sim.state()["stats"]["hub_token_expired"] == 1
