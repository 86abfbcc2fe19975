"""Run the TopstepX simulator as a real process for a test."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import requests
import yaml

from common.contracts import quarterly_months

from tests.harness.procs import ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def front_month_on(time_mode: str | None, start_at: str | None) -> str:
    """The MES contract the simulator serves for `MES` when it starts on `start_at`; the
    symbol itself when the day is only known once the sim runs (SimProcess.start reads it)."""
    if time_mode == "start_at" and start_at and "T" in start_at:
        return quarterly_months("MES", date.fromisoformat(start_at[:10]))[0]
    return "MES"


class SimProcess:
    """`python -m services.sim` on a free port. Keyword arguments override the `sim:` section,
    e.g. SimProcess(speed=0, time_mode="start_at", start_at="2026-11-23T16:20:00")."""

    def __init__(self, tmp_path: Path | None = None, **sim: Any):
        self.tmp = Path(tmp_path or tempfile.mkdtemp(prefix="sim-"))
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.port = sim.pop("port", None) or free_port()
        self.sim = {"speed": 20.0, "time_mode": "start_at", "start_at": "2026-11-23T09:30:00", **sim,
                    "port": self.port}
        self.username = self.sim.get("username", "demo")
        self.api_key = self.sim.setdefault("api_key", "test-key-0123")
        self.account_id = self.sim.get("account_id", 26000001)
        # default: the MES front month on the market day the sim starts (its clock, not the wall's)
        self.contract_id = self.sim.get("contract") or front_month_on(self.sim.get("time_mode"), self.sim.get("start_at"))
        self.config = self.tmp / "sim-config.yaml"
        self.config.write_text(yaml.safe_dump({
            "sim": self.sim, "trading": {"contract": self.contract_id},
            "logging": {"dir": str(self.tmp / "sim-logs"), "level": "INFO", "console": True}}))
        self.proc: subprocess.Popen | None = None

    base_url = property(lambda self: f"http://127.0.0.1:{self.port}")
    market_hub_url = property(lambda self: f"{self.base_url}/hubs/market")
    user_hub_url = property(lambda self: f"{self.base_url}/hubs/user")
    out_path = property(lambda self: self.tmp / "sim.out")

    def start(self, timeout: float = 20) -> "SimProcess":
        out = open(self.out_path, "ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "services.sim", "--config", str(self.config)],
                                     cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"simulator exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                r = requests.get(f"{self.base_url}/sim/state", timeout=1)
                if r.status_code == 200:
                    self.contract_id = r.json()["market"]["contract"]   # a symbol resolved by the sim
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"simulator not ready in {timeout} s:\n{self.tail()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.out_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def control(self, name: str, **params: Any) -> dict:
        r = requests.post(f"{self.base_url}/sim/control/{name}", json=params, timeout=5)
        r.raise_for_status()
        return r.json()

    def state(self) -> dict:
        return requests.get(f"{self.base_url}/sim/state", timeout=5).json()

    def token(self) -> str:
        r = requests.post(f"{self.base_url}/api/Auth/loginKey",
                          json={"userName": self.username, "apiKey": self.api_key}, timeout=5)
        return r.json()["token"]

    def api(self, path: str, body: dict, token: str | None = None) -> dict:
        r = requests.post(f"{self.base_url}{path}", json=body, timeout=5,
                          headers={"Authorization": f"Bearer {token or self.token()}"})
        r.raise_for_status()
        return r.json()

    def __enter__(self) -> "SimProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
