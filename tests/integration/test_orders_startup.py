"""The gateway started before the broker is up (a loaded box, the simulator still starting) waits
for it and comes up, instead of exiting for supervisord to restart it; bad credentials still end
it at once with one line (services/orders/__main__.py, common/topstepx/startup.py)."""
from __future__ import annotations

import time

import pytest

from common.bus import LazyPirateClient
from common.messages import Heartbeat, OrderCommand
from tests.integration.orders_helpers import Gw, wait_for
from tests.harness.sim import SimProcess

pytestmark = pytest.mark.integration


def test_gateway_started_before_the_simulator_comes_up_when_it_does(tmp_path):
    sim = SimProcess(tmp_path / "sim", speed=1.0)          # its port is chosen; not started yet
    gw = Gw(tmp_path, sim)
    try:
        gw.start(wait_ready=False)
        out = gw.proc.out_path
        wait_for(lambda: out.read_text().count("API: login: broker not reachable") >= 2, 30, 0.2,
                 "two waiting lines")
        time.sleep(2.0)
        assert gw.proc.alive(), out.read_text()
        line = next(ln for ln in out.read_text().splitlines() if "broker not reachable" in ln)
        assert "attempt 1" in line and sim.api_key not in line
        # meanwhile its command socket answers at once, and says why it does nothing yet
        client = LazyPirateClient("test", gw.cfg.bus.orders_cmd, timeout_ms=2000, retries=0)
        try:
            t0 = time.monotonic()
            rep = client.request(OrderCommand("op-status-starting", "status")).msg
            assert time.monotonic() - t0 < 0.5 and not rep.ok and rep.status == "starting", rep
        finally:
            client.close()
        sim.start()
        wait_for(lambda: any(isinstance(m, Heartbeat) and m.service == "orders" and m.state == "ok"
                             for m in gw.of(Heartbeat)), 60, 0.2, "gateway heartbeat ok")
        assert gw.proc.alive() and gw.proc.starts == 1
        assert "refusing to start" not in out.read_text()
    finally:
        gw.stop()
        sim.stop()


def test_bad_credentials_end_the_gateway_with_one_line(tmp_path):
    with SimProcess(tmp_path / "sim", speed=1.0) as sim:
        sim.api_key = "wrong-key"                           # the gateway's config gets this one
        gw = Gw(tmp_path, sim)
        gw.proc.start()
        try:
            wait_for(lambda: not gw.proc.alive(), 30, 0.2, "gateway exit")
            assert gw.proc.proc.returncode == 2
            text = gw.proc.out_path.read_text()
            assert "API: refusing to start:" in text and "broker not reachable" not in text
            assert "wrong-key" not in text
        finally:
            gw.proc.terminate(10)
