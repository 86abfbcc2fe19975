"""The bus over real ZeroMQ sockets between real processes.

- Clone pattern: a subscriber that misses messages (high-water mark overflow, late join, publisher
  restart) recovers the publisher's current retained state exactly from a snapshot.
- Lazy Pirate: a request whose server dies after executing it is resent unchanged to the restarted
  server, which answers it from its persisted first answer: executed once.
- A REP server answers garbage with an error Reply and keeps serving.
- SIGTERM stops a ServiceLoop process through its shutdown hooks with exit code 0.
"""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import msgpack
import pytest
import zmq

from common.bus import LazyPirateClient, ServiceUnavailable, Subscriber
from common.messages import Heartbeat, OrderCommand, OrderReply, Position, Query, Reply, decode, encode

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent(r'''
    import json, os, sys, time
    from pathlib import Path
    import common.bus as bus
    from common.messages import OrderCommand, OrderReply, Position, Query, Reply

    mode, args = sys.argv[1], json.loads(sys.argv[2])

    def pos(key, size):
        return Position(key, 1, size, "6050.25")

    if mode == "pub":
        # a publisher of Position state plus a control REP socket the test drives it with
        if args.get("hwm"):
            bus.HWM = args["hwm"]
        loop = bus.ServiceLoop("pub")
        pub = bus.Publisher("pub", args["pub"], args["snap"]).attach(loop)
        for key, size in args.get("initial", []):
            pub.publish(pos(key, size), key=key)
        for key in args.get("forget", []):
            pub.publish(pos(key, 0), key=key, forget=True)

        def control(env):
            q = env.msg
            if q.what == "publish":
                for key, size in q.params["items"]:
                    pub.publish(pos(key, size), key=key)
            elif q.what == "lose":
                # numbered and retained like any message, but the frame never leaves: lost in transit
                real, pub.sock = pub.sock, type("Void", (), {"send_multipart": lambda *a, **k: None})()
                try:
                    for key, size in q.params["items"]:
                        pub.publish(pos(key, size), key=key)
                finally:
                    pub.sock = real
            elif q.what == "burst":
                p = q.params
                for i in range(p["n"]):
                    key = f"K{i % p['keys']}"
                    pub.publish(pos(key, p["base"] + i), key=key)
            return Reply(True, "", {"epoch": pub.epoch, "seqs": {t.decode(): s for t, s in pub.seqs.items()},
                                    "sent": pub.sent})

        bus.ReplyServer("ctl", args["ctl"], control).attach(loop)
        if args.get("heartbeat_s"):
            loop.every(args["heartbeat_s"], pub.heartbeat)
        loop.on_shutdown(pub.close)
        print("ready", flush=True)
        loop.run()

    elif mode == "idem":
        # an idempotent order server: key -> first answer, persisted so a restarted server knows it
        state = Path(args["state"])
        answers = json.loads(state.read_text()) if state.exists() else {}

        def log(name, line):
            with open(Path(args["dir"]) / name, "a") as f:
                f.write(line + "\n")

        def handle(env):
            m = env.msg
            if isinstance(m, Query):
                if m.what == "boom":
                    raise RuntimeError("handler bug")
                return Reply(True, "pong", {"pid": os.getpid()})
            log("received", json.dumps([m.key, env.seq, env.ts_ns, env.src, os.getpid()]))
            if m.key in answers:
                return OrderReply(**answers[m.key])
            log("executed", m.key)                       # the side effect that must happen once
            answer = OrderReply(m.key, True, "filled", f"executed by pid {os.getpid()}", {"size": m.size})
            answers[m.key] = {"key": answer.key, "ok": answer.ok, "status": answer.status,
                              "message": answer.message, "detail": answer.detail}
            tmp = state.with_suffix(".tmp")
            tmp.write_text(json.dumps(answers))
            os.replace(tmp, state)
            if args.get("die_after_execute"):
                os._exit(3)                               # executed and persisted, never answered
            return answer

        server = bus.ReplyServer("orders", args["ep"], handle)
        print("ready", flush=True)
        while True:
            server.serve_one(wait_ms=-1)

    elif mode == "loop":
        out = Path(args["out"])
        loop = bus.ServiceLoop("svc")
        loop.every(0.01, lambda: None)

        def write(text):
            with open(out, "a") as f:
                f.write(text + "\n")

        def failing_hook():
            raise RuntimeError("a failing shutdown step")

        loop.on_shutdown(lambda: write("first " + loop.stop_reason))
        loop.on_shutdown(failing_hook)
        loop.on_shutdown(lambda: write("second"))
        if args.get("slow_start"):
            # a start-up that blocks before run() (a broker reconciliation): SIGTERM lands here
            print("ready", flush=True)
            time.sleep(args["slow_start"])
        else:
            loop.call_soon_threadsafe(lambda: print("ready", flush=True))
        loop.run()
        write("exited run")
''')


class Children:
    """Child processes started by one test; each is killed (by pid) at teardown."""

    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.procs: list[subprocess.Popen] = []

    def start(self, mode: str, **args) -> subprocess.Popen:
        err = open(self.tmp_path / f"{mode}-{len(self.procs)}.err", "wb")
        p = subprocess.Popen([sys.executable, "-c", CHILD, mode, json.dumps(args)], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=err, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        err.close()
        self.procs.append(p)
        ready, _, _ = select.select([p.stdout], [], [], 20)
        line = p.stdout.readline() if ready else b""
        assert line.strip() == b"ready", f"{mode} did not start: {err.name}: {Path(err.name).read_text()[-2000:]}"
        return p

    def kill9(self, p: subprocess.Popen) -> None:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
        p.wait(10)

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                self.kill9(p)
            p.stdout.close()


@pytest.fixture
def children(tmp_path):
    c = Children(tmp_path)
    yield c
    c.close()


def eps(tmp_path: Path) -> dict[str, str]:
    return {"pub": f"ipc://{tmp_path}/pub.sock", "snap": f"ipc://{tmp_path}/snap.sock",
            "ctl": f"ipc://{tmp_path}/ctl.sock"}


def control(tmp_path: Path) -> LazyPirateClient:
    return LazyPirateClient("test-ctl", eps(tmp_path)["ctl"], timeout_ms=5000, retries=0)


def apply(state: dict[str, int], envs) -> None:
    for e in envs:
        if isinstance(e.msg, Position):
            state[e.msg.contract] = e.msg.size


def pump(sub: Subscriber, state: dict, until, timeout: float = 10.0, what: str = "state") -> list:
    """Drain into `state` until until() holds; return every envelope seen."""
    seen = []
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {state} stats={sub.stats}"
        got = sub.recv(50)
        apply(state, got)
        seen += got
    return seen


def connect_live(sub: Subscriber, ctl: LazyPirateClient, state: dict, key: str = "warm") -> None:
    """Beat the slow joiner: publish until one live message has arrived on this subscriber."""
    deadline = time.monotonic() + 10
    n = 0
    while True:
        n += 1
        ctl.request(Query("publish", {"items": [[key, n]]}))
        got = sub.recv(100)
        apply(state, got)
        if any(not e.snapshot for e in got):
            return
        assert time.monotonic() < deadline, "the subscriber never received a live message"


# --------------------------------------------------------------------------
# Clone pattern
# --------------------------------------------------------------------------

def test_hwm_overflow_gap_healed_by_snapshot(tmp_path, children):
    e = eps(tmp_path)
    children.start("pub", hwm=20, **e)
    ctl = control(tmp_path)
    sub = Subscriber("test", e["pub"], e["snap"], topics=[Position], hwm=10, snapshot_timeout_ms=5000)
    state: dict[str, int] = {}
    connect_live(sub, ctl, state)

    n, keys = 20_000, 50
    ctl.request(Query("burst", {"n": n, "keys": keys, "base": 1000}))   # the subscriber is not reading
    expected = {f"K{k}": max(1000 + i for i in range(n) if i % keys == k) for k in range(keys)}
    expected["warm"] = state["warm"]

    received_before = sub.stats.received
    quiet_since = time.monotonic()       # read what survived the overflow; a gap inside it heals right away
    while time.monotonic() - quiet_since < 0.3:
        before = sub.stats.received + sub.stats.malformed
        apply(state, sub.recv(50))
        if sub.stats.received + sub.stats.malformed != before:
            quiet_since = time.monotonic()
    delivered = sub.stats.received - received_before
    assert delivered < n, "nothing was dropped: the high-water mark did not overflow"
    assert sub.stats.gaps >= 1 or state != expected

    # the next message shows any gap at the tail (messages lost last are only noticed on the next
    # message of that topic); the snapshot restores every key exactly
    rep = ctl.request(Query("publish", {"items": [["K0", 99_999]]})).msg
    expected["K0"] = 99_999
    pump(sub, state, lambda: state == expected, what="the state after the gap")
    assert sub.stats.gaps >= 1 and sub.stats.snapshots >= 2 and sub.stats.malformed == 0
    assert sub.last_seq[b"Position"] == rep.data["seqs"]["Position"]

    # and live updates continue in sequence afterwards
    gaps = sub.stats.gaps
    rep = ctl.request(Query("publish", {"items": [["K1", 5], ["K2", 6]]})).msg
    expected.update(K1=5, K2=6)
    pump(sub, state, lambda: state == expected, what="live updates after the heal")
    assert sub.stats.gaps == gaps
    assert sub.last_seq[b"Position"] == rep.data["seqs"]["Position"]
    sub.close()
    ctl.close()


def test_a_message_lost_at_the_end_of_a_burst_is_seen_at_the_next_heartbeat(tmp_path, children):
    """No further message on the topic: the publisher's heartbeat carries its last sequence numbers."""
    e = eps(tmp_path)
    children.start("pub", heartbeat_s=0.1, **e)
    ctl = control(tmp_path)
    sub = Subscriber("test", e["pub"], e["snap"], topics=[Position, Heartbeat], snapshot_timeout_ms=5000)
    state: dict[str, int] = {}
    connect_live(sub, ctl, state)
    ctl.request(Query("publish", {"items": [["ES", 1], ["NQ", 2]]}))
    pump(sub, state, lambda: state.get("NQ") == 2, what="live updates")
    assert sub.stats.gaps == 0

    # the last two updates of a burst are lost and nothing else is ever published on Position
    ctl.request(Query("lose", {"items": [["ES", 3], ["NQ", 4]]}))
    pump(sub, state, lambda: state.get("ES") == 3 and state.get("NQ") == 4,
         what="the lost tail restored by the snapshot a heartbeat asked for")
    assert sub.stats.gaps == 1 and sub.stats.snapshots == 2
    assert sub.last_seq[b"Position"] == ctl.request(Query("publish", {"items": []})).msg.data["seqs"]["Position"]
    sub.close()
    ctl.close()


def test_late_join_gets_the_retained_state(tmp_path, children):
    e = eps(tmp_path)
    initial = [["ES", 1], ["NQ", 1], ["ES", 2], ["MES", 3], ["MNQ", 4], ["ES", 5], ["CLOSED", 7]]
    children.start("pub", initial=initial, forget=["CLOSED"], **e)
    ctl = control(tmp_path)
    assert ctl.request(Query("publish", {"items": [["NQ", 9]]})).msg.data["seqs"]["Position"] == 9

    # the subscriber starts after all of that was published: it saw none of it live
    sub = Subscriber("late", e["pub"], e["snap"], topics=[Position], snapshot_timeout_ms=5000)
    envs = sub.recv(5000)
    assert envs and all(x.snapshot for x in envs)
    assert [(x.msg.contract, x.msg.size) for x in envs] == [("MES", 3), ("MNQ", 4), ("ES", 5), ("NQ", 9)]
    assert sub.last_seq[b"Position"] == 9 and sub.stats.snapshots == 1
    state: dict[str, int] = {}
    apply(state, envs)

    # live messages after the snapshot continue from its sequence number
    connect_live(sub, ctl, state)
    assert sub.stats.stale_dropped == 0 and all(k in state for k in ("MES", "MNQ", "ES", "NQ"))
    assert "CLOSED" not in state
    sub.close()
    ctl.close()


def test_publisher_restart_resyncs(tmp_path, children):
    e = eps(tmp_path)
    first = children.start("pub", initial=[["ES", 1], ["NQ", 1], ["MES", 1]], heartbeat_s=0.05, **e)
    ctl = control(tmp_path)
    epoch1 = ctl.request(Query("publish", {"items": [["ES", 2], ["ES", 3], ["ES", 4]]})).msg.data["epoch"]
    sub = Subscriber("test", e["pub"], e["snap"], topics=[Position, Heartbeat], snapshot_timeout_ms=5000)
    state: dict[str, int] = {}
    pump(sub, state, lambda: state == {"ES": 4, "NQ": 1, "MES": 1}, what="the first publisher's state")
    assert sub.epoch == epoch1 and sub.last_seq[b"Position"] == 6

    children.kill9(first)
    ctl.close()
    # the restarted publisher numbers from 1 again and publishes its state at start, before this
    # subscriber has reconnected (those messages are lost); afterwards it only sends heartbeats
    children.start("pub", initial=[["ES", 10], ["MNQ", 10]], heartbeat_s=0.05, **e)
    ctl = control(tmp_path)
    epoch2 = ctl.request(Query("info")).msg.data["epoch"]
    assert epoch2 != epoch1

    seen = pump(sub, state, lambda: sub.epoch == epoch2 and state.get("MNQ") == 10,
                what="a resync to the restarted publisher")
    snap = [x for x in seen if x.snapshot and x.epoch == epoch2]
    assert [(x.msg.contract, x.msg.size) for x in snap] == [("ES", 10), ("MNQ", 10)]
    assert state["ES"] == 10
    assert sub.last_seq[b"Position"] == 2

    # new live messages of the new epoch (seq 3, lower than the old 6) are not dropped as stale
    ctl.request(Query("publish", {"items": [["NQ", 11]]}))
    pump(sub, state, lambda: state.get("NQ") == 11, what="a live message of the new epoch")
    assert sub.last_seq[b"Position"] == 3
    sub.close()
    ctl.close()


def test_snapshot_unavailable_is_retried(tmp_path, children):
    e = eps(tmp_path)
    sub = Subscriber("early", e["pub"], e["snap"], topics=[Position], snapshot_timeout_ms=100)
    assert sub.drain() == [] and sub.stats.snapshot_failures == 1 and sub.need_snapshot
    children.start("pub", initial=[["ES", 1]], **e)
    state: dict[str, int] = {}
    pump(sub, state, lambda: state == {"ES": 1}, what="the snapshot once the publisher is up")
    assert not sub.need_snapshot
    sub.close()


# --------------------------------------------------------------------------
# Lazy Pirate against an idempotent server that dies and comes back
# --------------------------------------------------------------------------

def test_lazy_pirate_resend_executes_once(tmp_path, children):
    ep = f"ipc://{tmp_path}/orders.sock"
    args = {"ep": ep, "state": str(tmp_path / "answers.json"), "dir": str(tmp_path)}
    first = children.start("idem", die_after_execute=True, **args)
    client = LazyPirateClient("engine", ep, timeout_ms=250, retries=40)
    cmd = OrderCommand("sig-20261125-0001", "enter", "CON.F.US.MES.H26", 1, 2, 8, 12, "sig-20261125-0001")
    result: dict = {}
    t = threading.Thread(target=lambda: result.update(env=client.request(cmd)), daemon=True)
    t.start()

    assert first.wait(10) == 3          # executed, persisted, died before answering
    time.sleep(0.3)                     # at least one more timeout while the server is down
    children.start("idem", **args)
    t.join(15)
    assert not t.is_alive(), "the client never got an answer"

    reply = result["env"].msg
    assert isinstance(reply, OrderReply) and reply.ok and reply.key == cmd.key
    assert reply.message == f"executed by pid {first.pid}"        # the first answer, not a second execution
    assert reply.detail == {"size": 2}
    assert (tmp_path / "executed").read_text().splitlines() == [cmd.key]
    received = [json.loads(x) for x in (tmp_path / "received").read_text().splitlines()]
    assert len(received) == 2 and client.resends >= 1
    assert received[0][:4] == received[1][:4]                       # the identical frame: key, seq, ts, src
    assert received[0][4] != received[1][4]                         # ... seen by two server processes

    # the same key again (an engine restarted and retries) -> the first answer, still one execution
    again = LazyPirateClient("engine-2", ep, timeout_ms=2000, retries=0).request(cmd).msg
    assert again == reply
    other = client.request(OrderCommand("sig-20261125-0002", "exit", "CON.F.US.MES.H26")).msg
    assert other.ok and other.key == "sig-20261125-0002"
    assert (tmp_path / "executed").read_text().splitlines() == [cmd.key, "sig-20261125-0002"]
    client.close()


def test_lazy_pirate_gives_up_when_nobody_answers(tmp_path):
    client = LazyPirateClient("engine", f"ipc://{tmp_path}/nobody.sock", timeout_ms=50, retries=2)
    t0 = time.monotonic()
    with pytest.raises(ServiceUnavailable, match="did not answer OrderCommand after 3 tries of 50 ms"):
        client.request(OrderCommand("k", "status"))
    assert client.resends == 2 and time.monotonic() - t0 < 2


# --------------------------------------------------------------------------
# Reply server and garbage
# --------------------------------------------------------------------------

def test_reply_server_answers_malformed_frames_and_keeps_serving(tmp_path, children):
    ep = f"ipc://{tmp_path}/orders.sock"
    server = children.start("idem", ep=ep, state=str(tmp_path / "answers.json"), dir=str(tmp_path))
    ctx = zmq.Context.instance()
    req = ctx.socket(zmq.REQ)
    req.setsockopt(zmq.LINGER, 0)
    req.setsockopt(zmq.RCVTIMEO, 5000)
    req.connect(ep)

    def ask(frame: bytes):
        req.send(frame)
        return decode(req.recv()).msg

    good_raw = msgpack.unpackb(encode(Query("ping")), raw=False)
    cases = [
        (b"\xc1garbage", "malformed request: not msgpack"),
        (msgpack.packb([1, 2, 3]), "malformed request: frame is a msgpack list, expected a map"),
        (msgpack.packb({**good_raw, "type": "DropTables"}), "malformed request: unknown message type 'DropTables'"),
        (msgpack.packb({**good_raw, "v": 99}), "malformed request: Query: schema version 99"),
        (msgpack.packb({**good_raw, "body": {}}), "malformed request: Query: missing field 'what'"),
        (msgpack.packb({**good_raw, "seq": True}), "malformed request: Query: envelope field 'seq' is True"),
        (encode(Query("boom")), "RuntimeError: handler bug"),
    ]
    for frame, text in cases:
        answer = ask(frame)
        assert isinstance(answer, Reply) and answer.ok is False, answer
        assert answer.message.startswith(text), answer.message
        ok = ask(encode(Query("ping")))
        assert ok.ok and ok.message == "pong"
    assert server.poll() is None
    req.close()


# --------------------------------------------------------------------------
# ServiceLoop shutdown
# --------------------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_runs_shutdown_hooks_and_exits_0(tmp_path, children, sig):
    out = tmp_path / "hooks.txt"
    proc = children.start("loop", out=str(out))
    proc.send_signal(sig)
    assert proc.wait(10) == 0
    assert out.read_text().splitlines() == [f"first {sig.name} received", "second", "exited run"]


def test_signal_during_start_up_still_runs_the_shutdown_hooks(tmp_path, children):
    out = tmp_path / "hooks.txt"
    proc = children.start("loop", out=str(out), slow_start=1.0)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    assert out.read_text().splitlines() == ["first SIGTERM received", "second", "exited run"]
