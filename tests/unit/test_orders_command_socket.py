"""The gateway's command socket before its loop runs: while the gateway waits for a broker that
is not up yet, every request is answered at once with a refusal that says so."""
from __future__ import annotations

import threading

from common.bus import LazyPirateClient
from common.messages import OrderCommand, OrderReply
from services.orders.command_socket import CommandSocket


def test_requests_are_refused_with_the_reason_while_the_gateway_starts(tmp_path):
    ep = f"ipc://{tmp_path}/cmd.sock"
    sock = CommandSocket("orders", ep, lambda env: OrderReply("x", True, "done"), 0.15, lambda task: None)
    waiting = threading.Thread(target=sock.refuse_for, args=(1.5, "the gateway is starting: waiting for the broker"))
    waiting.start()
    client = LazyPirateClient("test", ep, timeout_ms=1000, retries=0)
    try:
        rep = client.request(OrderCommand("op-status-1", "status")).msg
        assert isinstance(rep, OrderReply) and not rep.ok and rep.status == "starting" and rep.key == "op-status-1"
        assert "waiting for the broker" in rep.message
    finally:
        waiting.join(3)
        client.close()
    assert sock.handler(None).status == "done"           # its own handler again once started
    sock.close()
