"""Every bound socket of every service answers anything (issue 15, item 1).

Real processes: the simulator, the five pipeline services and the supervision listener. Hypothesis fires arbitrary bytes,
arbitrary msgpack and envelope-shaped garbage (real type names, fields of the wrong kinds,
commands that are not orders) at every REP socket (snapshots, operator commands, the
gateway's commands, the keeper's queries), arbitrary subscription frames at every PUB socket
and raw bytes below ZeroMQ at every ipc path. After each example a valid request to the same
socket must be answered correctly; at the end every process is alive, every publisher still
heartbeats and the simulator has received no order.

A well-formed entry (`OrderCommand` "enter"/"reverse" with a real direction) is a real order,
not garbage, so the envelope strategy never builds those two actions; everything else the
gateway accepts (status, halt, resume, exit, flatten, cancel_all) is drawn.
"""
from __future__ import annotations

import socket
import subprocess
import sys
import time

import msgpack
import pytest
import zmq
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from common.config import load_config
from common.messages import (
    _FIELDS, ORDER_ACTIONS, REGISTRY, SCHEMA_VERSION, Heartbeat, OperatorCommand, OrderCommand, OrderReply, Query, Reply,
    SnapshotReply, SnapshotRequest, decode, encode,
)
from tests.harness.config import write_config
from tests.harness.procs import ROOT, ServiceProcess, wait_for
from tests.harness.sim import SimProcess

pytestmark = pytest.mark.integration

EXAMPLES = 150                       # bounded: the default suite runs this
DAY = "2026-11-23"                   # a Monday; 09:30 at 1x: no ATR (14 min) so the engine never enters
SERVICES = ("feed", "positions", "orders", "inference", "engine")

# bus key -> what a valid request to it is
REP_SOCKETS = {
    "feed_snap": "snapshot", "inference_snap": "snapshot", "engine_snap": "snapshot",
    "orders_snap": "snapshot", "positions_snap": "snapshot", "supervision_snap": "snapshot",
    "engine_cmd": "operator", "orders_cmd": "order", "positions_query": "query",
}
PUB_SOCKETS = ("feed_pub", "inference_pub", "engine_pub", "orders_pub", "positions_pub", "supervision_pub")

# -- strategies ---------------------------------------------------------------

scalars = (st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats(allow_nan=True)
           | st.text(max_size=24) | st.binary(max_size=24))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=8) | st.integers(-5, 5), inner, max_size=4),
                      max_leaves=16)
SAFE_ORDER_ACTIONS = [a for a in ORDER_ACTIONS if a not in ("enter", "reverse")]
FIELD_VALUES = {
    ("OrderCommand", "action"): st.sampled_from(SAFE_ORDER_ACTIONS) | st.text(max_size=12),
    ("OperatorCommand", "action"): st.sampled_from(["halt", "resume", "flatten", "status"]) | st.text(max_size=12),
    ("Query", "what"): st.sampled_from(["status", "position", "trades"]) | st.text(max_size=12),
    ("SnapshotRequest", "topics"): st.lists(st.sampled_from(["Heartbeat", "Position", ""]) | values,
                                            min_size=1, max_size=4),
}


REQUEST_TYPES = ["SnapshotRequest", "OperatorCommand", "OrderCommand", "Query"]
OF_TYPE = {str: st.text(max_size=30), int: st.integers(-2**63, 2**63 - 1), float: st.floats(),
           bool: st.booleans(), bytes: st.binary(max_size=30), list: st.lists(values, max_size=4),
           dict: st.dictionaries(st.text(max_size=8), values, max_size=4)}


def field_value(type_name: str, name: str, accepted: tuple[type, ...]):
    """Mostly a value of the field's own type (so the message decodes and reaches a handler),
    sometimes anything at all."""
    if (type_name, name) in FIELD_VALUES:
        return FIELD_VALUES[(type_name, name)]
    own = st.one_of([OF_TYPE[t] for t in accepted if t in OF_TYPE] or [values])
    return st.one_of(own, own, own, values)


@st.composite
def envelopes(draw) -> bytes:
    """A map shaped like an envelope: a real type name and its fields, values of any kind.
    Half of them have a valid header (version, seq, ts, src) and a request type with its
    required fields, so the garbage reaches the services' handlers and not only the decoder."""
    well_formed = draw(st.booleans())
    if well_formed:
        type_name = draw(st.sampled_from(REQUEST_TYPES))
    else:
        type_name = draw(st.sampled_from(sorted(REGISTRY)) | st.text(max_size=10))
    cls = REGISTRY.get(type_name)
    body = {}
    for name, accepted, _nullable, required in _FIELDS.get(cls, ()):
        if (well_formed and required) or draw(st.booleans()):
            body[name] = draw(field_value(type_name, name, accepted))
    if not well_formed:
        body.update(draw(st.dictionaries(st.text(max_size=8), values, max_size=2)))
    env = {"type": type_name, "v": SCHEMA_VERSION, "seq": draw(st.integers(0, 2**40)),
           "ts": draw(st.integers(0, 2**62)), "src": "fuzz", "body": body}
    if not well_formed:
        for key in draw(st.lists(st.sampled_from(sorted(env)), max_size=3, unique=True)):
            env[key] = draw(values)
        for key in draw(st.lists(st.sampled_from(sorted(env)), max_size=2, unique=True)):
            del env[key]
    if draw(st.booleans()):
        env["hops"] = draw(st.dictionaries(st.text(max_size=6), st.integers(0, 2**62) | values, max_size=2))
    if draw(st.booleans()):
        env["ep"] = draw(st.integers(0, 2**62) | values)
    return msgpack.packb(env, use_bin_type=draw(st.booleans()))


def packed(v) -> bytes:
    return msgpack.packb(v, use_bin_type=True)


frames = st.one_of(
    st.binary(max_size=300).map(lambda b: [b]),                         # arbitrary bytes
    st.lists(st.binary(max_size=50), min_size=2, max_size=3),           # ... in several parts
    values.map(lambda v: [packed(v)]),                                  # arbitrary msgpack
    envelopes().map(lambda f: [f]),                                     # envelope-shaped garbage
    envelopes().map(lambda f: [f]),
    envelopes().map(lambda f: [f]),
    st.tuples(envelopes(), st.binary(max_size=20)).map(list),           # ... in two parts
)
targets = st.sampled_from(sorted(REP_SOCKETS) + list(PUB_SOCKETS))
layers = st.sampled_from(["zmq", "zmq", "zmq", "raw"])                  # mostly ZeroMQ, sometimes below it

# -- the pipeline ---------------------------------------------------------------


@pytest.fixture
def pipeline(tmp_path):
    sim = SimProcess(tmp_path / "sim", speed=1, time_mode="start_at", start_at=f"{DAY}T09:30:00")
    cfg_path = write_config(tmp_path, sim, trading={"clock": "event"}, logging={"level": "INFO"})
    procs = [ServiceProcess(name, cfg_path) for name in SERVICES]
    with sim:
        for p in procs:
            p.start()
        # the supervisord event listener reads supervisord's protocol on stdin: an open pipe
        # that never speaks stands in for supervisord
        listener = ServiceProcess("supervision", cfg_path)
        listener.starts += 1
        with open(listener.out_path, "ab") as out:
            listener.proc = subprocess.Popen(
                [sys.executable, "-m", "services.supervision", "--config", str(cfg_path)], cwd=ROOT,
                env={k: v for k, v in listener.env.items() if k != "SUPERVISOR_SERVER_URL"},
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=out, start_new_session=True)
        procs.append(listener)
        try:
            yield sim, load_config(cfg_path), procs
        finally:
            for p in reversed(procs):
                p.terminate(30)


class Client:
    """REQ sockets for the test: one request, one answer, a fresh socket each time."""

    def __init__(self):
        self.ctx = zmq.Context()

    def ask(self, endpoint: str, parts: list[bytes], timeout_s: float = 10.0):
        sock = self.ctx.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(endpoint)
        try:
            sock.send_multipart(parts)
            if not sock.poll(int(timeout_s * 1000)):
                return None
            return sock.recv()
        finally:
            sock.close()

    def subscribe_garbage(self, endpoint: str, parts: list[bytes]) -> None:
        sock = self.ctx.socket(zmq.XSUB)
        sock.setsockopt(zmq.LINGER, 100)
        sock.connect(endpoint)
        sock.send_multipart(parts)
        time.sleep(0.01)
        sock.close()

    def close(self) -> None:
        self.ctx.destroy(linger=0)


def raw_bytes(endpoint: str, parts: list[bytes]) -> None:
    """Bytes below ZeroMQ: no greeting, no framing. libzmq drops the connection; the socket lives."""
    assert endpoint.startswith("ipc://")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        s.connect(endpoint[len("ipc://"):])
        try:
            s.sendall(b"".join(parts))
        except OSError:
            pass          # the peer may hang up first: that is an answer too


def valid_answer(client: Client, cfg, key: str) -> tuple[bool, str]:
    """A real request to bus socket `key`, and whether its answer is the right one."""
    kind = REP_SOCKETS[key]
    msg = {"snapshot": SnapshotRequest([]), "operator": OperatorCommand("status"),
           "order": OrderCommand(f"status-{time.time_ns()}", "status"), "query": Query("status")}[kind]
    raw = client.ask(getattr(cfg.bus, key), [encode(msg, seq=1, ts_ns=time.time_ns(), src="fuzz")])
    if raw is None:
        return False, f"{key}: no answer to a valid {type(msg).__name__}"
    got = decode(raw).msg
    ok = {"snapshot": lambda m: isinstance(m, SnapshotReply) and m.epoch > 0,
          "operator": lambda m: isinstance(m, Reply) and m.ok and "breakers" in m.data,
          "order": lambda m: isinstance(m, OrderReply) and m.ok and "working_orders" in m.detail,
          "query": lambda m: isinstance(m, Reply) and m.ok and "position" in m.data}[kind](got)
    return ok, f"{key}: {got!r}"[:300]


def heartbeating(client: Client, endpoint: str, service: str, timeout_s: float = 5.0) -> bool:
    sock = client.ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SUBSCRIBE, b"Heartbeat")
    sock.connect(endpoint)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if sock.poll(200):
                env = decode(sock.recv_multipart()[-1])
                if isinstance(env.msg, Heartbeat) and env.msg.service == service:
                    return True
        return False
    finally:
        sock.close()


def test_every_bound_socket_answers_anything_and_nothing_trades(pipeline):
    sim, cfg, procs = pipeline
    client = Client()
    try:
        def all_answer() -> bool:
            return all(valid_answer(client, cfg, k)[0] for k in REP_SOCKETS)
        wait_for(all_answer, 90, 0.5, what="every service answering:\n" +
                 "\n".join(f"--- {p.name}\n{p.tail(8)}" for p in procs))
        seen: dict[str, int] = {}

        # no shrinking: the services keep state between examples, so a shrunk example would
        # blame whatever came after the frame that did the damage
        @settings(max_examples=EXAMPLES, deadline=None, database=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(target=targets, parts=frames, layer=layers)
        def fire(target, parts, layer):
            endpoint = getattr(cfg.bus, target)
            seen[target] = seen.get(target, 0) + 1
            if layer == "raw":
                raw_bytes(endpoint, parts)
            elif target in PUB_SOCKETS:
                client.subscribe_garbage(endpoint, parts)
            else:
                answer = client.ask(endpoint, parts)
                assert answer is not None, f"{target} did not answer {parts!r:.200}"
                env = decode(answer)       # an answer is a message of ours, never raw bytes
                assert isinstance(env.msg, (Reply, OrderReply, SnapshotReply)), env.msg
            if target in REP_SOCKETS:
                ok, detail = valid_answer(client, cfg, target)
                assert ok, f"after {parts!r:.200} ({layer}): {detail}"

        fire()
        assert set(seen) == set(REP_SOCKETS) | set(PUB_SOCKETS), f"not every socket was fired at: {seen}"
        dead = [p.name for p in procs if not p.alive()]
        assert not dead, f"{dead} died:\n" + "\n".join(p.tail(20) for p in procs if p.name in dead)
        for key in REP_SOCKETS:
            ok, detail = valid_answer(client, cfg, key)
            assert ok, detail
        for key in PUB_SOCKETS:
            service = key.removesuffix("_pub")
            assert heartbeating(client, getattr(cfg.bus, key), service), f"{service} stopped heartbeating"
        st_ = sim.state()
        assert st_["orders"] == [] and st_["positions"] == [], f"the fuzz traded: {st_['orders']} {st_['positions']}"
        assert all("Traceback" not in p.output() for p in procs), \
            "a traceback in a service log:\n" + "\n".join(p.tail(40) for p in procs if "Traceback" in p.output())
    finally:
        client.close()
