"""The operator CLI against real processes: `scalper check` places nothing and says what is wrong."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.harness.config import write_config
from tests.harness.procs import ROOT
from tests.harness.sim import SimProcess

pytestmark = pytest.mark.integration


def scalper(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "common.cli", *args], cwd=ROOT, capture_output=True,
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


def test_check_resolves_a_symbol_to_the_front_month(tmp_path):
    with SimProcess(tmp_path / "sim", start_at="2026-11-23T10:00:00") as sim:   # market day: Z26 is front
        cfg = write_config(tmp_path, sim, trading={"contract": "MES"})
        r = scalper("--config", str(cfg), "check")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "[ok] contract resolved: MES -> CON.F.US.MES.Z26" in r.stdout
    assert "[ok] contract: CON.F.US.MES.Z26 tickSize 0.25" in r.stdout
