"""The engine never waits long on a dead order gateway: a real engine process and a real gateway
against the simulator; the gateway is killed with kill -9 and kept down for a while. Meanwhile the
engine's heartbeats keep their 1 s cadence, its operator socket answers at once (a flatten too:
the gateway's view is stale, so one short try), its status says the view is stale, and no entry
goes out; once the gateway is back, the engine reads its status again and the view is fresh."""
from __future__ import annotations

import time

import pytest

from common.bus import LazyPirateClient, ServiceUnavailable, Subscriber
from common.messages import Heartbeat, OperatorCommand
from tests.harness.procs import ServiceProcess, wait_for
from tests.harness.sim import SimProcess
from tests.integration.orders_helpers import Gw, price

pytestmark = pytest.mark.integration

DOWN_S = 6.0


def engine_status(client: LazyPirateClient) -> tuple[dict, float]:
    """The engine's status and how long it took (an engine still starting: {} and inf)."""
    t0 = time.perf_counter()
    try:
        rep = client.request(OperatorCommand("status"), timeout_ms=2000, retries=0).msg
    except ServiceUnavailable:
        return {}, float("inf")
    return rep.data, (time.perf_counter() - t0) * 1000


def test_engine_heartbeats_and_operator_answers_while_the_gateway_is_killed(tmp_path):
    with SimProcess(tmp_path / "sim", speed=1.0) as sim:
        price(sim, "6050.00")
        gw = Gw(tmp_path, sim, api={"order_timeout_s": 1.0, "request_timeout_s": 2.0})
        gw.start()
        engine = ServiceProcess("engine", gw.cfg_path)
        engine.start()
        ops = LazyPirateClient("test", gw.cfg.bus.engine_cmd, timeout_ms=2000, retries=0)
        beats = Subscriber("test", gw.cfg.bus.engine_pub, gw.cfg.bus.engine_snap, topics=[Heartbeat])
        seen: list[tuple[float, dict]] = []

        def drain() -> None:
            for env in beats.drain():
                if isinstance(env.msg, Heartbeat) and not env.snapshot:
                    seen.append((time.monotonic(), env.msg.stats))
        try:
            wait_for(lambda: engine_status(ops)[0].get("synced"), 20, 0.3, "the engine read the gateway's status")
            wait_for(lambda: (drain(), len(seen) >= 2)[1], 10, 0.1, "engine heartbeats")
            gw.proc.kill9()
            t0 = time.monotonic()
            n = len(seen)
            answers_ms: list[float] = []
            flatten_ms = None
            stale_seen = False
            while time.monotonic() - t0 < DOWN_S:
                drain()
                st, ms = engine_status(ops)
                answers_ms.append(ms)
                stale_seen = stale_seen or bool(st.get("gateway_stale"))
                if flatten_ms is None and time.monotonic() - t0 > 1.0:
                    f0 = time.perf_counter()
                    rep = ops.request(OperatorCommand("flatten", "drill", key="op-flatten-down"),
                                      timeout_ms=3000, retries=0).msg
                    flatten_ms = (time.perf_counter() - f0) * 1000
                    assert not rep.ok and "did not answer" in rep.message, rep
                time.sleep(0.2)
            drain()
            down = [t for t, _ in seen[n:] if t <= t0 + DOWN_S]
            stamps = [t0] + down
            gaps = [b - a for a, b in zip(stamps, stamps[1:])]
            assert len(down) >= DOWN_S - 1 and max(gaps) < 1.6, (
                f"engine heartbeats while the gateway was down: gaps {[round(g, 2) for g in gaps]}\n"
                f"{engine.tail()}")
            assert max(answers_ms) < 250, answers_ms
            assert flatten_ms is not None and flatten_ms < 600, flatten_ms
            assert stale_seen, "the engine never said its view of the gateway is stale"
            assert any(s.get("gateway_stale") for _, s in seen[n:])
            assert engine.alive()
            # the gateway comes back: the engine reads its status and its view is fresh again
            gw.start()
            wait_for(lambda: not engine_status(ops)[0].get("gateway_stale"), 15, 0.3,
                     "a fresh view of the restarted gateway")
            assert "not sent" not in engine.output(), "the engine tried an entry"
        finally:
            ops.close()
            beats.close()
            engine.terminate(10)
            gw.stop()
