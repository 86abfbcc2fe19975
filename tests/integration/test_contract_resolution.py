"""`trading.contract: MES` resolved at start to the front month over REST (common/service.py
boot -> common/contracts.py), against the real simulator, whose contract list follows its
own market day. Market days are stated; the wall clock never enters."""
from __future__ import annotations

import subprocess
import sys

import pytest

from common.bus import Subscriber
from common.config import load_config
from common.messages import Quote
from tests.harness.config import write_config
from tests.harness.procs import ROOT, ServiceProcess, wait_for
from tests.harness.sim import SimProcess

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("start_at, front", [("2026-11-23T10:00:00", "CON.F.US.MES.Z26"),
                                              ("2026-12-18T10:00:00", "CON.F.US.MES.H27")])   # Z26 expiry day
def test_a_symbol_is_resolved_to_the_front_month_of_the_market_day(tmp_path, start_at, front):
    with SimProcess(tmp_path / "sim", speed=10, start_at=start_at, contract="MES") as sim:
        assert sim.contract_id == front                     # the sim resolved MES on its market day
        cfg_path = write_config(tmp_path, sim, trading={"contract": "MES"}, feed={"stale_check": "never"})
        cfg = load_config(cfg_path)
        sub = Subscriber("test", cfg.bus.feed_pub, cfg.bus.feed_snap, topics=[Quote])
        feed = ServiceProcess("feed", cfg_path).start()
        try:
            got = wait_for(lambda: [e for e in sub.drain() if not e.snapshot], 20, what="quotes")
            assert {e.msg.contract for e in got} == {front}
            wait_for(lambda: f"CONTRACT: trading.contract MES -> {front}" in feed.output(), 5, what="log line")
        finally:
            feed.terminate()


def test_sim_refuses_to_serve_an_expired_contract(tmp_path):
    sim = SimProcess(tmp_path / "sim", start_at="2026-11-23T10:00:00", contract="CON.F.US.MES.H26")
    out = subprocess.run([sys.executable, "-m", "services.sim", "--config", str(sim.config)], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    (line,) = out.stderr.strip().splitlines()
    assert "CON.F.US.MES.H26 expired on 2026-03-20" in line and "2026-11-23" in line and "MES" in line
