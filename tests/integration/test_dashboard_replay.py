"""The dashboard and the report in replay: a real recording replayed into the feed socket, the
real inference worker, the dashboard as a process. The page shows the replayed market and the
model's calls, and the dashboard's session record gives the report its price and confidence
charts, as in simulation and live (the dashboard reads only the bus)."""
from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

import pytest

from common.config import load_config
from services.positions.report import load_session, render_html
from services.replay.convert import convert
from tests.harness.browser import Browser, chromium_path
from tests.harness.config import write_config
from tests.harness.procs import ROOT, ServiceProcess, wait_for
from tests.harness.sim import free_port

pytestmark = pytest.mark.integration
REAL = ROOT / "data" / "real" / "ESM8_2018-05-07_trades.csv.gz"
CONTRACT = "CON.F.US.EP.M18"
DAY = "2018-05-07"           # the recording's day (a Monday)


def state(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/state", timeout=3) as r:
        return json.loads(r.read())


def test_replay_drives_the_dashboard_and_the_report(tmp_path):
    rec = tmp_path / "esm8.rec"
    assert convert(REAL, rec, CONTRACT) > 70_000
    port = free_port()
    cfg_path = write_config(tmp_path, trading={"contract": CONTRACT, "clock": "event"},
                            replay={"start_delay_s": 1.0}, dashboard={"port": port})
    cfg = load_config(cfg_path)
    with ServiceProcess("inference", cfg_path) as inf, ServiceProcess("dashboard", cfg_path) as dash:
        wait_for(lambda: _answers(port), 30, interval=0.3, what=f"the dashboard answering\n{dash.tail()}")
        replay = subprocess.run([sys.executable, "-m", "services.replay", str(rec), "--config", str(cfg_path),
                                 "--speed", "60", "--from", "10:00", "--to", "10:12"],
                                cwd=ROOT, capture_output=True, text=True, timeout=180)
        assert replay.returncode == 0, replay.stdout[-2000:] + replay.stderr[-2000:]
        wait_for(lambda: state(port)["prediction"] is not None, 30, interval=0.3,
                 what=f"a prediction on the dashboard\n{inf.tail()}\n{dash.tail()}")
        v = state(port)
        assert len(v["chart"]["bars"]) > 600, len(v["chart"]["bars"])       # 12 minutes of 1 s bars, most of them
        assert v["quote"] is not None and v["quote"]["last"].startswith("26")  # ES in May 2018: 26xx
        assert v["services"]["inference"]["state"] in ("ok", "starting")
        if chromium_path() is not None:
            with Browser(tmp_path / "browser") as b:
                b.goto(f"http://127.0.0.1:{port}/")
                b.wait_js("document.getElementById('prediction').textContent.includes('%')", 20,
                          what="the model's latest call on the page")
                assert b.text("#contract") == CONTRACT
                b.screenshot(ROOT / "logs" / "screenshots" / "dashboard_replay.png", full_page=False)
    assert dash.proc.returncode == 0, dash.tail()
    # the dashboard's record makes the report's price and confidence charts
    session = cfg.path(cfg.logging.dir) / f"session_{DAY}.jsonl"
    lines = [json.loads(x) for x in session.read_text().splitlines()]
    assert sum(1 for r in lines if r["t"] == "bar") >= 10
    data = load_session(cfg.path(cfg.logging.dir), DAY)
    assert data.contract == CONTRACT
    assert len(data.bars) >= 10 and data.confidence_skipped and not data.trips
    html_text = render_html(data)
    assert "no price recorded" not in html_text and "no predictions recorded" not in html_text


def _answers(port: int) -> bool:
    try:
        state(port)
        return True
    except OSError:
        return False
