"""The gateway's own flatten at flatten_time with no engine running: the simulator starts a few
minutes before 16:25 New York, the real feed process drives the gateway's event clock."""
from __future__ import annotations

import pytest

from common.messages import Heartbeat
from tests.harness.procs import ServiceProcess
from tests.harness.sim import SimProcess
from tests.integration.orders_helpers import Gw, positions, protected, wait_for, working

pytestmark = pytest.mark.integration


def test_flatten_at_flatten_time_without_engine(tmp_path):
    with SimProcess(tmp_path / "sim", speed=15.0, start_at="2026-11-23T16:22:00") as sim:
        gw = Gw(tmp_path, sim, trading={"no_new_entries_minutes": 1},
                feed={"stale_check": "never", "min_backoff_s": 0.05, "max_backoff_s": 0.5})
        feed = ServiceProcess("feed", gw.cfg_path).start()
        try:
            gw.start()
            wait_for(lambda: any(h.service == "orders" and h.exch_ns > 0 for h in gw.of(Heartbeat)), 15,
                     what="gateway clock driven by the feed")
            rep = gw.enter("LE6000", size=1, stop=40, target=80)
            assert rep.status == "accepted", rep
            wait_for(lambda: protected(sim), 10, what="bracket")
            # no engine: nobody asks; the gateway flattens at 16:25 by itself and verifies
            wait_for(lambda: not positions(sim) and not working(sim) and
                     any(f.leg == "eod" for f in gw.fills()), 30, what="flat at flatten time")
            eod = [f for f in gw.fills() if f.leg == "eod"]
            assert len(eod) == 1 and eod[0].intent_key.startswith("gw-eod-2026-11-23")
            assert "EOD FLATTEN" in gw.proc.output()
            late = gw.enter("LE6001")
            assert late.status == "refused" and "flatten" in late.message
        finally:
            gw.stop()
            feed.terminate(10)
