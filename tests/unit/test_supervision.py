"""The crash-loop listener's pure parts: counting exits, the supervisord protocol, the engine's breaker."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.engine.breakers import CRASH_LOOP, BreakerParams, Breakers
from services.supervision.crashloop import CrashWatch, position_text
from services.supervision.protocol import Reader, tokens


def test_n_exits_within_the_window_is_a_crash_loop_once():
    w = CrashWatch(max_exits=3, window_s=600)
    assert [w.on_exit("orders", t) for t in (0, 10, 20)] == [False, False, True]
    assert "orders exited 3 times in 0.3 min (limit 3 in 10 min)" in w.detail()
    assert "supervisorctl -c supervisord.conf start orders" in w.detail()
    assert w.on_exit("orders", 25) is False          # already stopped: one trip, not one per exit
    assert w.counts(25) == {"orders": 4}


def test_exits_spread_wider_than_the_window_never_trip():
    w = CrashWatch(max_exits=3, window_s=60)
    assert not any(w.on_exit("feed", t) for t in range(0, 1000, 31))
    assert w.counts(2000) == {} and w.total["feed"] == 33


def test_programs_are_counted_apart():
    w = CrashWatch(max_exits=2, window_s=60)
    assert not w.on_exit("feed", 0) and not w.on_exit("orders", 1)
    assert w.on_exit("orders", 2) and list(w.stopped) == ["orders"]


def test_started_again_the_next_crash_in_the_window_stops_it_again():
    w = CrashWatch(max_exits=3, window_s=600)
    for t in (0, 1, 2):
        w.on_exit("orders", t)
    assert w.on_running("orders") and not w.stopped
    assert w.on_running("orders") is False            # not stopped: nothing to clear
    assert w.on_exit("orders", 100) is True


def test_position_text():
    assert position_text({"CON.F.US.MES.H26": (1, 2), "X": (0, 0)}) == "LONG 2 CON.F.US.MES.H26"
    assert position_text({"CON.F.US.MES.H26": (-1, 1)}) == "SHORT 1 CON.F.US.MES.H26"
    assert position_text({}) == ""


def event_bytes(name: str, payload: str, serial: int = 1) -> bytes:
    body = payload.encode()
    return (f"ver:3.0 server:supervisor serial:{serial} pool:supervision poolserial:{serial} "
            f"eventname:{name} len:{len(body)}\n").encode() + body


def test_tokens():
    assert tokens("processname:orders groupname:orders from_state:RUNNING expected:0 pid:12") == {
        "processname": "orders", "groupname": "orders", "from_state": "RUNNING", "expected": "0", "pid": "12"}


@given(st.lists(st.integers(1, 40), min_size=1, max_size=30))
def test_reader_gives_the_same_events_however_the_stream_is_cut(cuts):
    stream = b"".join(event_bytes(n, f"processname:p{i} groupname:p{i} from_state:STARTING", i)
                      for i, n in enumerate(["PROCESS_STATE_EXITED", "PROCESS_STATE_RUNNING",
                                             "PROCESS_STATE_BACKOFF"]))
    r, got, pos = Reader(), [], 0
    for c in cuts + [len(stream)]:
        got += r.feed(stream[pos:pos + c])
        pos += c
    assert [(e.name, e.body["processname"]) for e in got] == [
        ("PROCESS_STATE_EXITED", "p0"), ("PROCESS_STATE_RUNNING", "p1"), ("PROCESS_STATE_BACKOFF", "p2")]
    assert r.buf == b""


def test_the_engine_breaker_blocks_until_the_listener_clears_it():
    b = Breakers(BreakerParams())
    [ev] = b.on_crash_loop(True, "orders exited 5 times")
    assert ev.kind == CRASH_LOOP and ev.active and ev.severity == "ERROR" and CRASH_LOOP in b.names()
    assert b.on_crash_loop(True, "orders exited 5 times") == []
    [more] = b.on_crash_loop(True, "orders ...; feed exited 5 times")     # another program joined
    assert more.active and "feed" in more.detail
    [clear] = b.on_crash_loop(False, "running again")
    assert not clear.active and CRASH_LOOP not in b.names()


class FakeRpc:
    """supervisord's XML-RPC as the listener uses it (a unit test may fake a collaborator)."""

    def __init__(self):
        self.stopped: list[str] = []

    def stopProcess(self, name, wait):
        self.stopped.append(name)
        return True


class FakePub:
    def __init__(self):
        self.sent: list[tuple] = []

    def publish(self, msg, key=None):
        self.sent.append((msg, key))


def event(name: str, program: str = "orders"):
    from services.supervision.protocol import Event
    return Event(name, {}, {"processname": program, "groupname": program})


def supervision(now):
    from services.supervision.__main__ import Supervision
    from services.supervision.config import SupervisionConfig
    rpc, pub = FakeRpc(), FakePub()
    return Supervision(None, SupervisionConfig(max_exits=2, window_min=1), pub, rpc, now=lambda: now[0]), rpc, pub


def test_listener_stops_the_loop_and_ignores_a_running_event_queued_before_the_stop():
    from common.messages import Position
    now = [0.0]
    sup, rpc, pub = supervision(now)
    sup.on_position(Position("CON.F.US.MES.H26", 1, 1, "6050.25"))
    sup.on_event(event("PROCESS_STATE_EXITED"))
    [(down, key)] = pub.sent
    assert (down.kind, down.active, key) == ("service_down", True, "service_down:orders")
    assert "LONG 1 CON.F.US.MES.H26" in down.detail
    sup.on_event(event("PROCESS_STATE_BACKOFF"))
    assert rpc.stopped == ["orders:orders"]
    assert [(m.kind, m.active) for m, _ in pub.sent[1:]] == [("crash_loop", True)]
    sup.on_event(event("PROCESS_STATE_RUNNING"))            # queued before the stop took effect
    assert [(m.kind, m.active) for m, _ in pub.sent[2:]] == [("service_down", False)]
    sup.on_event(event("PROCESS_STATE_STOPPED"))
    sup.on_event(event("PROCESS_STATE_RUNNING"))            # the operator started it again
    assert [(m.kind, m.active) for m, _ in pub.sent[3:]] == [("crash_loop", False)]


def test_a_flat_account_or_another_program_is_no_service_down():
    now = [0.0]
    sup, rpc, pub = supervision(now)
    sup.on_event(event("PROCESS_STATE_EXITED"))                   # flat
    from common.messages import Position
    sup.on_position(Position("CON.F.US.MES.H26", -1, 2, "6050.25"))
    sup.on_event(event("PROCESS_STATE_EXITED", "inference"))      # not critical with a position
    sup.on_event(event("PROCESS_STATE_EXITED", "supervision"))    # itself: ignored
    assert pub.sent == [] and rpc.stopped == []
