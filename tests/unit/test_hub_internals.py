"""common/topstepx/hub.py reaches into signalrcore's internals (its WebSocket client class,
frame reader, socket and transport attributes). pyproject pins signalrcore to the exact
version they were read from; this test fails when an upgrade changes any of them, so the
upgrade is a decision (re-read the code, re-run tests/unit/test_hub*.py, update the hashes)
and never an accident."""
from __future__ import annotations

import hashlib
import inspect
from importlib.metadata import version

from signalrcore.hub import base_hub_connection as bh
from signalrcore.hub_connection_builder import HubConnectionBuilder
from signalrcore.protocol import base_hub_protocol as bp
from signalrcore.transport import base_transport as bt
from signalrcore.transport.sockets import base_socket_client as bs
from signalrcore.transport.websockets import websocket_client as wc
from signalrcore.transport.websockets import websocket_transport as wt

from common.topstepx import hub

PINNED = "1.0.2"
# sha256 (first 16 hex digits) of the source of everything hub.py relies on
SOURCES = {
    "WebSocketClient._read_one_frame": (wc.WebSocketClient._read_one_frame, "2458ea3a758616dc"),
    "WebSocketClient._recv_frame": (wc.WebSocketClient._recv_frame, "596a235ae5d43428"),
    "WebSocketClient.send": (wc.WebSocketClient.send, "7d847eaa7d40e3ac"),
    "WebSocketClient.prepare_data": (wc.WebSocketClient.prepare_data, "04a2f1d620baeb4d"),
    "BaseSocketClient.__init__": (bs.BaseSocketClient.__init__, "1c427a9099dfad18"),
    "BaseSocketClient.run": (bs.BaseSocketClient.run, "c0157ca5cfb25132"),
    "BaseSocketClient.connect": (bs.BaseSocketClient.connect, "7abbf49f02494e61"),
    "WebsocketTransport.create_client": (wt.WebsocketTransport.create_client, "0d2adf012b9e780a"),
    "WebsocketTransport.send": (wt.WebsocketTransport.send, "ff7b0dfd1d72e489"),
    "WebsocketTransport.on_message": (wt.WebsocketTransport.on_message, "8a7ef54a74030911"),
    "BaseTransport.__init__": (bt.BaseTransport.__init__, "e92c782d526a59c2"),
    "BaseTransport.start": (bt.BaseTransport.start, "dfb79a9c974f4c8e"),
    "BaseHubConnection.start": (bh.BaseHubConnection.start, "9d656c0a08a62279"),
    "BaseHubConnection.on_message": (bh.BaseHubConnection.on_message, "06f4e07e38b28b40"),
    "BaseHubProtocol.get_message": (bp.BaseHubProtocol.get_message, "33976ec25b3035cb"),
}


def test_signalrcore_is_the_pinned_version():
    assert version("signalrcore") == PINNED, (
        f"signalrcore {version('signalrcore')} installed, hub.py was written against {PINNED}")


def test_the_internals_hub_py_uses_are_unchanged():
    changed = [name for name, (obj, want) in SOURCES.items()
               if hashlib.sha256(inspect.getsource(obj).encode()).hexdigest()[:16] != want]
    assert not changed, f"signalrcore internals changed, re-check common/topstepx/hub.py: {changed}"


def test_the_transport_builds_our_websocket_client_and_it_reads_frames():
    assert wt.WebSocketClient is hub._WebSocketClient, "the control-frame client is installed"
    assert issubclass(hub._WebSocketClient, wc.WebSocketClient)
    # the attribute names _teardown and the watchdog use
    client = hub._WebSocketClient(url="ws://127.0.0.1:1/x")
    for attr in ("running", "recv_thread", "_read_one_frame", "prepare_data"):   # `sock` is set by connect()
        assert hasattr(client, attr), attr
    conn = HubConnectionBuilder().with_url("ws://127.0.0.1:1/hubs/x", options={"skip_negotiation": True}).build()
    assert hasattr(conn, "on_message") and hasattr(conn, "transport")
    transport = wt.WebsocketTransport(url="ws://127.0.0.1:1/x", protocol=None, on_message=lambda m: None)
    assert isinstance(transport.create_client(), hub._WebSocketClient)
    for attr in ("manually_closing", "connection_checker"):
        assert hasattr(transport, attr), attr
