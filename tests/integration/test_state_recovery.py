"""Corrupt-state drill (issue 15, item 3), with the real simulator, gateway and keeper.

A position is open with its stop and target at the broker; both services die by kill -9; the
gateway's SQLite journal is truncated and the keeper's state file cut in half. Each service
then stops with exit code 3 and one line naming its file and `scalper recover SERVICE`, no
traceback. After the recovery command each starts, rebuilds from the broker and logs it, and
its view equals the broker's: the same position, the same working orders.
"""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from common.bus import LazyPirateClient
from common.messages import Query
from common.statefile import EXIT_BAD_STATE
from tests.harness.procs import ROOT, ServiceProcess
from tests.integration.orders_helpers import Gw, price, protected, sim, wait_for  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration


def recover(cfg_path, service: str) -> str:
    out = subprocess.run([sys.executable, "-m", "common.cli", "--config", str(cfg_path), "recover", service],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    print(out.stdout)
    return out.stdout


def fatal_run(proc: ServiceProcess, path, service: str) -> None:
    """Start, expect exit 3 and exactly one error line that names the file and the command."""
    before = len(proc.output())
    proc.start()
    assert proc.proc.wait(60) == EXIT_BAD_STATE, proc.tail()
    out = proc.output()[before:]
    errors = [line for line in out.splitlines() if "[ERROR]" in line]
    assert len(errors) == 1, out
    assert str(path) in errors[0] and f"scalper recover {service}" in errors[0], errors[0]
    assert "Traceback" not in out and "sqlite3" not in out.replace("DatabaseError", ""), out


def keeper_position(cfg) -> dict:
    client = LazyPirateClient("test", cfg.bus.positions_query, timeout_ms=1500, retries=0)
    try:
        return client.request(Query("status")).msg.data["position"]
    except Exception:
        return {}
    finally:
        client.close()


def test_corrupt_journal_and_state_file_one_line_recover_and_rebuild_from_the_broker(tmp_path, sim):
    gw = Gw(tmp_path, sim).start()
    keeper = ServiceProcess("positions", gw.cfg_path)
    keeper.start()
    state = tmp_path / "logs" / "state"
    journal_path = state / f"orders_{sim.account_id}.sqlite"
    keeper_path = state / "positions.json"
    try:
        price(sim, "6050.00")
        assert gw.enter("LE7001").status == "accepted"
        wait_for(lambda: protected(sim), 15, what="entry filled with stop and target at the broker")
        wait_for(lambda: keeper_position(gw.cfg).get("size") == 1 and keeper_path.exists(), 20,
                 what="the keeper holding the position and its state saved")
        gw.proc.kill9()
        keeper.kill9()

        data = journal_path.read_bytes()
        journal_path.write_bytes(data[: len(data) // 3])
        text = keeper_path.read_text()
        keeper_path.write_text(text[: len(text) // 2])

        fatal_run(gw.proc, journal_path, "orders")
        fatal_run(keeper, keeper_path, "positions")

        said = recover(gw.cfg_path, "orders") + recover(gw.cfg_path, "positions")
        assert str(journal_path) in said and str(keeper_path) in said, said
        assert not journal_path.exists() and not keeper_path.exists()
        assert list(state.glob(f"{journal_path.name}.corrupt-*")) and list(state.glob("positions.json.corrupt-*"))

        broker = sim.state()
        [bpos] = broker["positions"]
        working = sorted(o["id"] for o in broker["working"])
        gw.start()
        keeper.start()
        st = gw.status()
        assert st["position"] == {"contract": bpos["contractId"], "direction": 1 if bpos["type"] == 1 else -1,
                                  "size": bpos["size"]}, (st, bpos)
        assert "state rebuilt from the broker" in gw.proc.output()
        # the bracket is judged from the broker's order list: a fresh journal must not read the
        # position as unprotected and send a second stop
        time.sleep(3)
        assert "protection_invariant" not in gw.proc.output()[-5000:]
        assert sorted(o["id"] for o in sim.state()["working"]) == working
        wait_for(lambda: keeper_position(gw.cfg).get("size") == bpos["size"], 30,
                 what=f"the keeper adopting the broker's position\n{keeper.tail()}")
        assert keeper_position(gw.cfg)["direction"] == (1 if bpos["type"] == 1 else -1)
        assert "rebuilding from the broker" in keeper.output()
        assert sim.state()["positions"] == broker["positions"]      # the recovery itself traded nothing
        assert len(sim.state()["orders"]) == len(broker["orders"])
    finally:
        keeper.terminate(20)
        gw.stop()
