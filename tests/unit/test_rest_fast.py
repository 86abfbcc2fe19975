"""The REST client's order writes on its urllib3 pool: the same body (Decimal prices as JSON
numbers), the same auth header, the same error mapping as the requests session, never retried,
kept alive; and no pool where requests would use a proxy. A scripted HTTP server on loopback."""
from __future__ import annotations

import json
import socket
import threading
import time
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from common.topstepx.rest import AuthError, BrokerError, OutcomeUnknown, RateLimited, TopstepXClient, TopstepXError

TOKEN = "tok-secret-123"


class Server:
    """Answers POSTs from a script: path -> (status, body bytes, delay_s); records every request."""

    def __init__(self):
        self.script: dict[str, tuple[int, bytes, float]] = {}
        self.seen: list[tuple[str, dict, dict]] = []
        self.connections = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                outer.connections += 1
                super().setup()

            def do_POST(self):
                n = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(n) or b"{}")
                outer.seen.append((self.path, dict(self.headers), body))
                status, out, delay = outer.script.get(self.path, (200, b'{"success": true}', 0.0))
                if delay:
                    time.sleep(delay)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(out)))
                    self.end_headers()
                    self.wfile.write(out)
                except OSError:
                    pass

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def client_for(url: str, **kw) -> TopstepXClient:
    c = TopstepXClient(url, "user", "key-secret-456", **kw)
    c._set_token(TOKEN)
    return c


def test_place_order_goes_out_on_the_pool_kept_alive(server):
    server.script["/api/Order/place"] = (200, b'{"success": true, "orderId": 77}', 0.0)
    c = client_for(server.url)
    try:
        assert c.fast is not None
        assert c.place_order(7, "CON.F.US.MES.H26", 4, 1, 2, stop_price=Decimal("6048.25"), custom_tag="K:stop:0") == 77
        c.cancel_order(7, 77)
        c.place_order(7, "CON.F.US.MES.H26", 1, 1, 2, limit_price=Decimal("6054.00"), custom_tag="K:target:0")
        (path, headers, body), = server.seen[:1]
        assert path == "/api/Order/place" and headers["Authorization"] == f"Bearer {TOKEN}"
        assert headers["Content-Type"] == "application/json"
        assert body == {"accountId": 7, "contractId": "CON.F.US.MES.H26", "type": 4, "side": 1, "size": 2,
                        "stopPrice": 6048.25, "customTag": "K:stop:0"}
        server.script["/api/Order/searchOpen"] = (200, b'{"success": true, "orders": []}', 0.0)
        assert c.open_orders(7) == []                            # a read, on the requests session
        assert [p for p, _, _ in server.seen] == ["/api/Order/place", "/api/Order/cancel", "/api/Order/place",
                                                  "/api/Order/searchOpen"]
        assert server.connections == 1         # one keep-alive connection, shared: the polls keep it warm
        assert c.stats["http_200"] == 4 and c.sent_ns() > 0
    finally:
        c.close()


def test_the_writes_map_errors_as_the_session_does(server):
    c = client_for(server.url, write_timeout_s=0.3)
    try:
        for status, body, exc, text in ((429, b"{}", RateLimited, "429"), (503, b"", OutcomeUnknown, "HTTP 503"),
                                        (400, b"bad field", TopstepXError, "HTTP 400 bad field"),
                                        (200, b"<html>", OutcomeUnknown, "not JSON"),
                                        (200, b"[1]", TopstepXError, "expected an object"),
                                        (401, b"", AuthError, "401")):
            server.script["/api/Order/cancel"] = (status, body, 0.0)
            with pytest.raises(exc) as got:
                c._raw("/api/Order/cancel", {"accountId": 7, "orderId": 1}, auth=True, timeout=0.3)
            assert text in str(got.value) and TOKEN not in str(got.value) and "key-secret" not in str(got.value)
        server.script["/api/Order/cancel"] = (200, b'{"success": false, "errorCode": 2, "errorMessage": "gone"}', 0.0)
        with pytest.raises(BrokerError) as refused:
            c.cancel_order(7, 1)
        assert refused.value.code == 2 and refused.value.message == "gone"
    finally:
        c.close()


def test_a_write_that_times_out_is_unknown_and_sent_once(server):
    server.script["/api/Order/place"] = (200, b'{"success": true, "orderId": 1}', 1.0)
    c = client_for(server.url, write_timeout_s=0.2)
    try:
        t0 = time.monotonic()
        with pytest.raises(OutcomeUnknown, match="no answer within 0.2 s"):
            c.place_order(7, "C", 2, 0, 1, custom_tag="K:entry:0")
        assert time.monotonic() - t0 < 0.9
        time.sleep(1.2)
        assert len(server.seen) == 1                 # never retried
    finally:
        c.close()


def test_a_refused_connection_is_unknown():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]                  # nothing listens there once closed
    c = client_for(f"http://127.0.0.1:{port}")
    try:
        with pytest.raises(OutcomeUnknown, match="connection failed"):
            c._raw("/api/Order/place", {}, auth=True, timeout=0.5)
    finally:
        c.close()


def test_no_pool_where_requests_would_use_a_proxy(server, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    c = client_for(server.url)
    try:
        assert c.fast is None                       # the session (and its proxy) carries the writes
    finally:
        c.close()
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    c = client_for(server.url)
    try:
        assert c.fast is not None
    finally:
        c.close()


def test_https_checks_the_certificate_as_requests_does(tmp_path, monkeypatch):
    """The pool trusts what requests trusts (REQUESTS_CA_BUNDLE here), and nothing else."""
    import ssl

    from tests.harness.tls import TestCA
    ca = TestCA(tmp_path / "tls")
    server = Server()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(ca.cert_pem), str(ca.key_pem))
    server.httpd.socket = ctx.wrap_socket(server.httpd.socket, server_side=True)
    url = server.url.replace("http://", "https://")
    server.script["/api/Order/place"] = (200, b'{"success": true, "orderId": 5}', 0.0)
    try:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca.ca_pem))
        c = client_for(url)
        try:
            assert c.fast is not None and c.place_order(7, "C", 2, 0, 1) == 5
        finally:
            c.close()
        monkeypatch.delenv("REQUESTS_CA_BUNDLE")
        c = client_for(url)                          # certifi's bundle: the test CA is unknown
        try:
            with pytest.raises(OutcomeUnknown, match="connection failed"):
                c.place_order(7, "C", 2, 0, 1)
        finally:
            c.close()
    finally:
        server.close()
