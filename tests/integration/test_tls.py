"""TLS as live runs it (https:// and wss://): the simulator serves a certificate from a CA made
for this test run; the hub client and the REST client check it. The whole pipeline runs once
over TLS under supervisord."""
from __future__ import annotations

import ssl
import threading
import time

import pytest
import requests

from common.bus import LazyPirateClient, Subscriber
from common.config import load_config
from common.messages import Fill, OrderCommand, Quote
from common.topstepx.hub import CONNECTED, HubClient
from common.topstepx.rest import TopstepXClient
from tests.harness.config import write_config
from tests.harness.pipeline import Pipeline
from tests.harness.procs import wait_for
from tests.harness.tls import TestCA, TlsSimProcess

pytestmark = pytest.mark.integration

DAY = "2026-11-23"          # a Monday, a normal CME session


@pytest.fixture
def ca(tmp_path, monkeypatch):
    ca = TestCA(tmp_path / "tls")
    for k, v in ca.env().items():
        monkeypatch.setenv(k, v)      # the harness's own requests, and every child process
    return ca


def test_hub_and_rest_clients_over_tls_check_the_certificate(tmp_path, ca):
    with TlsSimProcess(tmp_path / "sim", ca, speed=2) as sim:
        assert sim.base_url.startswith("https://")
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{sim.port}/sim/state", timeout=3)     # TLS only
        rest = TopstepXClient(sim.base_url, sim.username, sim.api_key)
        assert [a["id"] for a in rest.accounts()] == [sim.account_id], "REST over https, certificate checked"
        got = threading.Event()
        trusted = ssl.create_default_context(cafile=str(ca.ca_pem))
        hub = HubClient(sim.market_hub_url, rest.token, name="market-tls", ssl_context=trusted,
                        subscriptions=lambda h: h.send("SubscribeContractQuotes", [sim.contract_id]),
                        handlers={"GatewayQuote": lambda args: got.set()})
        hub.start()
        try:
            assert got.wait(15), f"no quote over wss ({hub.last_reason})"
            wait_for(lambda: hub.state == CONNECTED, 5, what="connected over wss")
        finally:
            hub.stop()
        # the same server with a context that does not trust the test CA: refused, never connected
        stranger = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)      # verifies, trusts nothing
        hub = HubClient(sim.market_hub_url, rest.token, name="market-untrusted", ssl_context=stranger,
                        connect_timeout_s=3, min_backoff_s=0.1, max_backoff_s=0.2)
        hub.start()
        try:
            wait_for(lambda: hub.stats["connects"] >= 2, 15, what="refused attempts")
            assert hub.state != CONNECTED
            assert "CERTIFICATE_VERIFY_FAILED" in hub.last_reason or "certificate" in hub.last_reason.lower(), \
                hub.last_reason
        finally:
            hub.stop()
        rest.close()


@pytest.mark.slow
def test_the_whole_pipeline_runs_over_tls(tmp_path, ca):
    """Every process under supervisord, every connection to the broker over TLS (the simulator
    listens on https/wss only): the feed streams quotes, the gateway's user hub is up and
    reconciled, an entry goes out over https and its fill comes back over wss, the keeper
    reconciles, the flatten leaves the broker flat. The engine's bar is set out of reach so the
    only trade is the drill's (a loaded machine must not decide whether the model trades)."""
    with TlsSimProcess(tmp_path / "sim", ca, speed=2, time_mode="start_at", start_at=f"{DAY}T10:00:00") as sim:
        cfg_path = write_config(tmp_path, sim, model={"min_confidence": 0.99, "reverse_confidence": 0.995},
                                trading={"clock": "event"})
        cfg = load_config(cfg_path)
        assert cfg.api.base_url.startswith("https://") and cfg.api.user_hub_url.startswith("https://")
        with Pipeline(tmp_path, cfg_path) as pipe:
            feed = Subscriber("test", cfg.bus.feed_pub, cfg.bus.feed_snap, topics=[Quote])
            fills = Subscriber("test", cfg.bus.orders_pub, cfg.bus.orders_snap, topics=[Fill])
            gw = LazyPirateClient("test", cfg.bus.orders_cmd, timeout_ms=3000, retries=3)
            try:
                wait_for(lambda: any(not e.snapshot for e in feed.drain()), 60, interval=0.2,
                         what=f"live quotes over wss\n{pipe.tails()}")

                def status() -> dict:
                    try:
                        return gw.request(OrderCommand(f"st-{time.time_ns()}", "status"), timeout_ms=1000,
                                          retries=0).msg.detail
                    except Exception:
                        gw.close()
                        return {}
                wait_for(lambda: status().get("entries_ok"), 60, interval=0.5,
                         what=f"user hub up and reconciled over wss\n{pipe.tails()}")
                reply = gw.request(OrderCommand("tls-drill-1", "enter", contract=sim.contract_id, direction=1, size=1,
                                                stop_ticks=40, target_ticks=80, signal_id="tls-drill-1",
                                                model_version="drill")).msg
                assert reply.status == "accepted", reply
                # (the first fill of the day: live or through a snapshot, either way it reached the bus)
                got = wait_for(lambda: [e.msg for e in fills.drain()] or None, 20,
                               what="the entry's fill back over the user hub")
                assert got[0].leg == "entry"
                wait_for(lambda: len(sim.state()["working"]) == 2, 10, what="stop and target at the broker")
                assert gw.request(OrderCommand("tls-flatten", "flatten", reason="drill")).msg.ok
                wait_for(lambda: not sim.state()["positions"] and not sim.state()["working"], 20,
                         what="flat at the broker")
                wait_for(lambda: "RECONCILE" in pipe.output("positions"), 10, what="the keeper reconciled over https")
            finally:
                gw.close()
                feed.close()
                fills.close()
        stats = sim.state()["stats"]
        assert stats.get("market_connects", 0) >= 1 and stats.get("user_connects", 0) >= 1, stats
        for name in ("feed", "orders", "positions"):
            out = pipe.output(name)
            assert "CERTIFICATE_VERIFY_FAILED" not in out and "SSLError" not in out, f"{name}: {out[-2000:]}"
