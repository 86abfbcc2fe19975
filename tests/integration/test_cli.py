"""The operator CLI against real processes: `scalper check` places nothing and says what is wrong."""
from __future__ import annotations

import subprocess
import sys

import pytest

from common.messages import RoundTrip
from services.positions import journal
from tests.harness.config import write_config
from tests.harness.procs import ROOT
from tests.harness.sim import SimProcess, free_port

pytestmark = pytest.mark.integration


def scalper(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "services.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def test_check_passes_against_the_simulator_and_places_nothing(tmp_path):
    with SimProcess(tmp_path / "sim") as sim:
        cfg = write_config(tmp_path, sim)
        r = scalper("--config", str(cfg), "check")
        st = sim.state()
    assert r.returncode == 0, r.stdout + r.stderr
    for what in ("config", "model", "authentication", "account", "contract", "broker state", "market hub"):
        assert f"[ok] {what}" in r.stdout, r.stdout
    assert "[warn] trading.flatten_time 16:25 is after the broker's flat-by time 16:10" in r.stdout
    assert st["orders"] == [] and st["trades"] == []
    assert sim.api_key not in r.stdout + r.stderr


def test_check_fails_with_one_line_on_bad_credentials(tmp_path):
    with SimProcess(tmp_path / "sim") as sim:
        cfg = write_config(tmp_path, sim, api={"api_key": "wrong-key-999"})
        r = scalper("--config", str(cfg), "check")
    assert r.returncode == 1
    fails = [l for l in r.stdout.splitlines() if l.startswith("[FAIL]")]
    assert fails and "login as 'demo' refused" in fails[0], r.stdout
    assert "wrong-key-999" not in r.stdout + r.stderr


def test_bad_config_exits_2_naming_the_key(tmp_path):
    cfg = write_config(tmp_path, None, risk={"max_daily_loss": -5})
    r = scalper("--config", str(cfg), "check")
    assert r.returncode == 2
    assert "risk.max_daily_loss = " in r.stderr and "greater than 0" in r.stderr, r.stderr


def test_report_writes_the_days_report_through_the_keepers_module(tmp_path):
    """`scalper report --day D` runs services.positions.report (the CLI imports no service):
    the page it names exists and holds the day's round trip."""
    day = "2026-01-15"
    cfg = write_config(tmp_path, None)
    logs = tmp_path / "logs"
    logs.mkdir()
    t0 = 1_768_491_000 * 10**9                   # 2026-01-15 10:30 New York
    journal.write_trades_csv(logs, day, [RoundTrip("CON.F.US.MES.H26", 1, 1, "6050.00", "6053.50", t0,
                                                   t0 + 60 * 10**9, 14, 1676, 74, "target", "LE1", "v1")])
    r = scalper("--config", str(cfg), "report", "--day", day)
    assert r.returncode == 0, r.stdout + r.stderr
    path = r.stdout.strip().splitlines()[-1]
    assert path.endswith(f"report_{day}.html")
    text = open(path).read()
    assert f"Trading session {day}" in text and "16.76" in text and "LE1" in text


def test_check_fails_the_model_line_when_the_model_does_not_match_its_config(tmp_path):
    """The model line comes from services.inference.check, which loads the model as the worker
    would: a config pointing at another model file is a [FAIL] naming it."""
    bogus = tmp_path / "other.onnx"
    bogus.write_bytes(b"not the model")
    nobody = f"127.0.0.1:{free_port()}"          # no broker: those lines fail fast, the model line is the point
    cfg = write_config(tmp_path, None, model={"path": str(bogus)},
                       api={"base_url": f"http://{nobody}", "ws_url": f"http://{nobody}/hubs/market",
                            "user_hub_url": f"http://{nobody}/hubs/user"})
    r = scalper("--config", str(cfg), "check", timeout=120)
    model = [l for l in r.stdout.splitlines() if "model" in l.split(":")[0]]
    assert r.returncode == 1
    assert model and model[0].startswith("[FAIL] model:") and "other.onnx" in model[0], r.stdout


def test_check_resolves_a_symbol_to_the_front_month(tmp_path):
    with SimProcess(tmp_path / "sim", start_at="2026-11-23T10:00:00") as sim:   # market day: Z26 is front
        cfg = write_config(tmp_path, sim, trading={"contract": "MES"})
        r = scalper("--config", str(cfg), "check")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "[ok] contract resolved: MES -> CON.F.US.MES.Z26" in r.stdout
    assert "[ok] contract: CON.F.US.MES.Z26 tickSize 0.25" in r.stdout
