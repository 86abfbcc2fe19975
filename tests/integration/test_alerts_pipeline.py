"""The alerts process in the whole pipeline under supervisord, against the simulator: the
Prometheus endpoint shows every service up with live figures, a kill -9 shows up as an alert
and a restart count, and after the 16:25 flatten the trader gets the EOD flatten result and a
day summary that agrees with the position keeper."""
from __future__ import annotations

import os
import signal
import time

import pytest

from common.bus import LazyPirateClient
from common.config import load_config
from common.messages import Query
from tests.harness.config import write_config
from tests.harness.pipeline import PIPELINE, Pipeline
from tests.harness.procs import wait_for
from tests.harness.receivers import HttpReceiver
from tests.harness.sim import SimProcess, free_port
from tests.integration.test_alerts_process import scrape

# whole-pipeline drills: slow (make slow, CI runs them after the default suite)
pytestmark = [pytest.mark.integration, pytest.mark.slow]

DAY = "2026-11-23"          # a Monday, a normal CME session


def up(m: dict, svc: str) -> bool:
    return m.get(("scalper_service_up", (("service", svc),))) == 1.0


def test_pipeline_metrics_restart_alert_eod_flatten_and_summary(tmp_path):
    with SimProcess(tmp_path / "sim", speed=40, time_mode="start_at", start_at=f"{DAY}T15:20:00", loop=True) as sim, \
            HttpReceiver() as hook:
        port = free_port()
        cfg_path = write_config(tmp_path, sim, model={"min_confidence": 0.38, "max_prediction_age_s": 5},
                                trading={"clock": "event"},
                                alerts={"metrics_port": port, "service_silent_s": 8, "summary_delay_s": 2,
                                        "eod_verify_s": 40, "supervisor_socket": str(tmp_path / "sv" / "supervisor.sock"),
                                        "webhook": {"url": f"{hook.url}/hook", "min_severity": "WARNING",
                                                    "rate_limit": {"burst": 100, "per_minute": 600}}})
        # the tape waits while six processes start (slowly, on a loaded machine)
        sim.control("pause")
        # alerts first, as in supervisord.conf: started first, stopped last
        pipe = Pipeline(tmp_path, cfg_path, services=("alerts",) + PIPELINE).start(timeout=120)
        try:
            sim.control("resume")
            # every service up, the market hub subscribed and quotes flowing, read from the scrape
            def live():
                try:
                    m = scrape(port)
                except OSError:
                    return None
                ok = all(up(m, s) for s in PIPELINE) and m.get(("scalper_hub_connected", (("hub", "market"),))) == 1.0 \
                    and m.get(("scalper_feed_quotes_per_second", ()), 0) > 0 \
                    and ("scalper_rest_budget_remaining", (("service", "orders"),)) in m
                return m if ok else None
            m = wait_for(live, 180, interval=0.5, what=f"a live scrape\n{pipe.tails()}")
            assert m[("scalper_rest_budget_remaining", (("service", "orders"),))] > 0
            assert m[("scalper_hub_connected", (("hub", "user"),))] == 1.0
            assert m[("scalper_service_restarts_total", (("service", "engine"),))] == 0

            # kill -9 the engine: supervisord restarts it; the trader is told, the counter moves
            pipe.kill9("engine")
            hook.wait(lambda r: r.body.get("kind") == "service_restarted" and r.body.get("service") == "engine",
                      timeout=90, what=f"engine restart alert\n{pipe.tails()}")
            wait_for(lambda: scrape(port).get(("scalper_service_restarts_total", (("service", "engine"),))) == 1, 30,
                     what="engine restart counted in the metrics")

            # past 16:25 market time: the EOD flatten result and then the day summary
            wait_for(lambda: sim.state()["market"]["now"] >= f"{DAY}T21:26:00", 300, interval=1,
                     what=f"market time past the flatten\n{pipe.tails()}")
            eod = hook.wait(lambda r: r.body.get("kind") == "eod_flatten", timeout=60,
                            what=f"the EOD flatten result\n{pipe.output('alerts')[-3000:]}")[0].body
            assert eod["severity"] == "INFO" and "flat" in eod["title"], eod
            assert not sim.state()["positions"]
            summ = hook.wait(lambda r: r.body.get("kind") == "eod_summary", timeout=30,
                             what=f"the day summary\n{pipe.output('alerts')[-3000:]}")[0].body
            cfg = load_config(cfg_path)
            rep = LazyPirateClient("test", cfg.bus.positions_query, timeout_ms=3000).request(Query("status")).msg
            acct = rep.data["account"]
            assert summ["data"]["trades"] == acct["trades_today"]
            assert summ["data"]["realized_cents"] == acct["realized_day_cents"]
            assert DAY in summ["title"] and acct["trades_today"] > 0, summ
            m = scrape(port)
            assert m[("scalper_trades_today", ())] == acct["trades_today"]
            assert m[("scalper_pnl_realized_day_cents", ())] == acct["realized_day_cents"]
            # a frozen service (SIGSTOP: supervisord still says RUNNING) is silent: alert, then back
            os.kill(pipe.pid("inference"), signal.SIGSTOP)
            try:
                hook.wait(lambda r: r.body.get("kind") == "service_silent" and r.body.get("service") == "inference"
                          and not r.body["resolved"], timeout=60, what=f"inference silent\n{pipe.output('alerts')[-2000:]}")
            finally:
                os.kill(pipe.pid("inference"), signal.SIGCONT)
            hook.wait(lambda r: r.body.get("kind") == "service_silent" and r.body["resolved"], timeout=60,
                      what="inference back")
            # stopped on purpose with supervisorctl: not an outage
            pipe.rpc.stopProcess("inference", True)
            time.sleep(12)
            silent = [b for b in hook.bodies() if b.get("kind") == "service_silent"]
            assert len(silent) == 2, silent
            assert pipe.state("alerts") == "RUNNING"
        finally:
            pipe.stop()
        # the ordered shutdown (engine ... feed, then alerts) raised no "silent" alert
        silent = [b for b in hook.bodies() if b.get("kind") == "service_silent"]
        assert len(silent) == 2, silent
        # the alerts process never sent anything to a trading service: its log has no ORDER line
        assert "ORDER:" not in pipe.output("alerts")
