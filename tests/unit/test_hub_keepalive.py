"""HubClient's keep-alive, watchdog, token refresh and WebSocket control frames, against a
hand-written WebSocket server (raw frames: fragments, pings and pongs exactly as sent).

The server below speaks just enough RFC 6455 and SignalR JSON: the upgrade, the handshake,
and whatever frames a test scripts. Everything the client sends is recorded, unmasked."""
from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import struct
import threading
import time

import pytest

from common.topstepx.hub import CONNECTED, HubClient

RS = "\x1e"
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n <= 125:
        head += bytes([n])
    elif n <= 65535:
        head += bytes([126]) + struct.pack(">H", n)
    else:
        head += bytes([127]) + struct.pack(">Q", n)
    return head + payload


def make_jwt(exp: float) -> str:
    def b64(d: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")
    return f"{b64({'alg': 'none'})}.{b64({'exp': exp, 'n': time.monotonic_ns()})}.c2ln"


class Conn:
    def __init__(self, reader, writer, token: str):
        self.reader, self.writer, self.token = reader, writer, token
        self.frames: list[tuple[int, bytes]] = []      # (opcode, payload) from the client
        self.records: list[dict] = []                  # SignalR records from the client
        self.closed = False


class RawHub:
    """A scriptable WebSocket/SignalR server on its own event loop thread.

    `auto_ping_s`: send a SignalR ping this often (0: never, a silent server)."""

    def __init__(self, auto_ping_s: float = 0.0):
        self.auto_ping_s = auto_ping_s
        self.conns: list[Conn] = []
        self.silent = False                        # stop sending anything (TCP stays open)
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.server = self.loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
            self.port = self.server.sockets[0].getsockname()[1]
            ready.set()
            self.loop.run_forever()
        threading.Thread(target=run, daemon=True).start()
        assert ready.wait(5)

    url = property(lambda self: f"http://127.0.0.1:{self.port}/hubs/market")

    async def _serve(self, reader, writer) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        key = next(l.split(":", 1)[1].strip() for l in lines if l.lower().startswith("sec-websocket-key"))
        token = lines[0].split("access_token=")[1].split(" ")[0].split("&")[0]
        accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        writer.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Accept: {accept}\r\n\r\n").encode())
        conn = Conn(reader, writer, token)
        self.conns.append(conn)
        pinger = asyncio.ensure_future(self._ping(conn)) if self.auto_ping_s else None
        try:
            while True:
                b0, b1 = await reader.readexactly(2)
                n = b1 & 0x7F
                if n == 126:
                    n = struct.unpack(">H", await reader.readexactly(2))[0]
                elif n == 127:
                    n = struct.unpack(">Q", await reader.readexactly(8))[0]
                mask = await reader.readexactly(4)
                data = bytes(b ^ mask[i % 4] for i, b in enumerate(await reader.readexactly(n)))
                conn.frames.append((b0 & 0x0F, data))
                if b0 & 0x0F == 0x8:
                    break
                if b0 & 0x0F != 0x1:
                    continue
                for rec in data.decode(errors="replace").split(RS):
                    if rec.strip():
                        msg = json.loads(rec)
                        conn.records.append(msg)
                        if "protocol" in msg and not self.silent:
                            writer.write(frame(0x1, b"{}" + RS.encode()))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            conn.closed = True
            if pinger:
                pinger.cancel()
            writer.close()

    async def _ping(self, conn: Conn) -> None:
        while True:
            await asyncio.sleep(self.auto_ping_s)
            if not self.silent:
                conn.writer.write(frame(0x1, b'{"type":6}' + RS.encode()))

    def send(self, data: bytes, conn: Conn | None = None) -> None:
        target = conn or self.conns[-1]
        self.loop.call_soon_threadsafe(target.writer.write, data)

    def close(self) -> None:
        async def shutdown() -> None:
            self.server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)


def wait_for(pred, timeout=10.0, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def raw_hub():
    s = RawHub(auto_ping_s=0.2)
    yield s
    s.close()


def test_client_sends_signalr_pings_when_it_has_nothing_else_to_send(raw_hub):
    hub = HubClient(raw_hub.url, lambda: "t", keep_alive_s=0.3, server_timeout_s=5)
    hub.start()
    try:
        wait_for(lambda: hub.state == CONNECTED, what="connected")
        time.sleep(2.0)
        pings = [r for r in raw_hub.conns[0].records if r == {"type": 6}]
        assert 4 <= len(pings) <= 8, f"a ping every ~0.3 s of silence, got {len(pings)} in 2 s"
        assert hub.stats["pings_sent"] == len(pings)
        assert hub.stats["connects"] == 1
    finally:
        hub.stop()


def test_a_silent_server_with_tcp_open_is_rebuilt_within_the_server_timeout(raw_hub):
    states: list = []
    subs: list = []
    hub = HubClient(raw_hub.url, lambda: "t", subscriptions=lambda h: subs.append(time.monotonic()),
                    on_state=lambda s, d: states.append((time.monotonic(), s, d)),
                    keep_alive_s=0.2, server_timeout_s=1.0, min_backoff_s=0.05)
    hub.start()
    try:
        wait_for(lambda: hub.state == CONNECTED, what="connected")
        time.sleep(1.5)
        assert hub.stats["connects"] == 1, "the server's pings keep a quiet link alive"
        raw_hub.silent = True                          # no pings, no data; the socket stays open
        went_silent = time.monotonic()
        wait_for(lambda: hub.stats["silent_reconnects"] == 1, timeout=5, what="the watchdog")
        # the watchdog counts first, then reports the state (on its own thread): wait for both
        noticed = wait_for(lambda: next((t for t, s, d in states if s == "reconnecting" and t > went_silent), None),
                           timeout=5, what="the reconnecting state")
        assert noticed - went_silent <= 1.0 + 0.2 + 0.5, "noticed within the server timeout (+ a ping gap)"
        raw_hub.silent = False
        wait_for(lambda: hub.state == CONNECTED and len(subs) == 2, what="rebuilt and re-subscribed")
        assert len(raw_hub.conns) == 2
        wait_for(lambda: raw_hub.conns[0].closed, what="the old socket closed by the client")
    finally:
        hub.stop()


def test_websocket_pings_are_answered_pongs_ignored_and_fragments_survive_control_frames(raw_hub):
    got: list = []
    hub = HubClient(raw_hub.url, lambda: "t", handlers={"GatewayQuote": got.append}, keep_alive_s=5)
    hub.start()
    try:
        wait_for(lambda: hub.state == CONNECTED, what="connected")
        conn = raw_hub.conns[0]
        raw_hub.send(frame(0x9, b"hello"))                       # a Ping: must come back as a Pong
        raw_hub.send(frame(0xA, b""))                            # an unsolicited Pong: ignored
        record = json.dumps({"type": 1, "target": "GatewayQuote", "arguments": ["C", {"lastPrice": 1.25}]})
        data = (record + RS).encode()
        raw_hub.send(frame(0x1, data[:10], fin=False)             # a fragmented text message ...
                     + frame(0x9, b"mid")                         # ... with a Ping between fragments
                     + frame(0xA, b"x")                           # ... and a Pong
                     + frame(0x0, data[10:20], fin=False)
                     + frame(0x0, data[20:], fin=True))
        wait_for(lambda: got, what="the fragmented invocation")
        assert got == [["C", {"lastPrice": 1.25}]]
        wait_for(lambda: sum(1 for op, _ in conn.frames if op == 0xA) == 2, what="two pongs")
        assert [d for op, d in conn.frames if op == 0xA] == [b"hello", b"mid"], "pongs echo the ping data"
        assert hub.stats["ws_ping"] == 2 and hub.stats["ws_pong"] == 2
        assert hub.stats["bad_frames"] == 0 and hub.stats["connects"] == 1
    finally:
        hub.stop()


def test_a_close_frame_is_answered_and_the_client_reconnects(raw_hub):
    hub = HubClient(raw_hub.url, lambda: "t", keep_alive_s=5, min_backoff_s=0.05)
    hub.start()
    try:
        wait_for(lambda: hub.state == CONNECTED, what="connected")
        raw_hub.send(frame(0x8, struct.pack(">H", 1001)))
        wait_for(lambda: len(raw_hub.conns) == 2 and hub.state == CONNECTED, what="reconnected")
        assert (0x8, struct.pack(">H", 1001)) in raw_hub.conns[0].frames, "the close is echoed"
    finally:
        hub.stop()


def test_token_is_refreshed_before_it_expires_at_once_and_resubscribed(raw_hub):
    subs: list = []
    issued: list = []

    def token() -> str:
        issued.append(make_jwt(time.time() + 4.0))          # a 4 s token: refresh 1 s before exp
        return issued[-1]
    hub = HubClient(raw_hub.url, token, subscriptions=lambda h: subs.append(time.monotonic()),
                    keep_alive_s=5, token_refresh_margin_s=60, min_backoff_s=2.0)
    hub.start()
    try:
        wait_for(lambda: hub.state == CONNECTED, what="connected")
        t0 = time.time()
        wait_for(lambda: len(subs) == 2, timeout=8, what="the refresh")
        assert 2.5 <= time.time() - t0 <= 4.0, "a quarter of the lifetime before exp, not at it"
        assert subs[1] - subs[0] < 4.0
        assert [c.token for c in raw_hub.conns] == issued[:2], "each connect with its fresh token"
        assert hub.stats["token_refreshes"] == 1
        assert hub.stats["connects"] == 2, "a planned refresh reconnects at once (min_backoff 2 s not applied)"
    finally:
        hub.stop()


def test_a_provider_that_returns_the_same_expiring_token_does_not_loop(raw_hub):
    tok = make_jwt(time.time() + 2.0)
    hub = HubClient(raw_hub.url, lambda: tok, keep_alive_s=5, token_refresh_margin_s=60)
    hub.start()
    try:
        wait_for(lambda: hub.stats["token_refreshes"] == 1, timeout=5, what="the refresh")
        time.sleep(1.0)
        assert hub.stats["connects"] == 2 and hub.stats["token_refreshes"] == 1
    finally:
        hub.stop()
