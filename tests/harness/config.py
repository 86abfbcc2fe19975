"""Write a config file for one test: isolated ipc endpoints, logs under the test's tmp dir."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from common.config import BusConfig

BASE = Path(__file__).resolve().parents[2] / "config" / "live_trading.yaml"


def bus_endpoints(run_dir: Path) -> dict[str, str]:
    """ipc:// endpoints inside run_dir, one per bus key, so parallel tests never collide."""
    run_dir.mkdir(parents=True, exist_ok=True)
    return {name: f"ipc://{run_dir}/{name}.sock" for name, v in BusConfig().model_dump().items()
            if isinstance(v, str)}


def _merge(dst: dict, src: dict) -> dict:
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _merge(dst[k], v)
        else:
            dst[k] = v
    return dst


def write_config(tmp_path: Path, sim: Any = None, **sections: dict) -> Path:
    """A copy of config/live_trading.yaml with ipc endpoints, logs in tmp_path/logs, the api pointed
    at `sim` (a tests.harness.sim.SimProcess) when given, and `sections` merged on top, e.g.
    write_config(tmp_path, sim, risk={"max_contracts": 1}, orders={"sweep_s": 1})."""
    raw = yaml.safe_load(BASE.read_text())
    raw["bus"] = bus_endpoints(tmp_path / "run")
    raw["logging"] = {"dir": str(tmp_path / "logs"), "level": "DEBUG", "console": True}
    if sim is not None:
        raw["api"].update({
            "mode": "sim", "base_url": sim.base_url, "ws_url": sim.market_hub_url,
            "user_hub_url": sim.user_hub_url, "username": sim.username, "api_key": sim.api_key,
            "account_id": sim.account_id,
        })
        raw["trading"]["contract"] = sim.contract_id
    else:
        # no broker to resolve the shipped symbol (MES) against: the id these tests' market days
        # (March 2026) trade; a test may set its own in `sections`
        raw["trading"]["contract"] = "CON.F.US.MES.H26"
    _merge(raw, sections)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path
