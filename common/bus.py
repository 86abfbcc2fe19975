"""ZeroMQ plumbing for the patterns in docs/architecture.md, named as the zguide names them.

- Publisher: PUB socket; numbers every message per topic, keeps the retained
  state (last message per key) and serves it on a snapshot socket.
- Subscriber: SUB socket plus the publisher's snapshot socket. A gap in a topic's
  sequence, a late join or a publisher restart (new epoch) is healed by asking for
  a snapshot and skipping what it already covers (the Clone pattern).
- LazyPirateClient: REQ with a timeout; on timeout it closes the socket, reopens
  it and resends the identical frame, so the server's idempotency key decides.
- ReplyServer: the server side of REQ/REP (a ROUTER doing REP's envelope work, see
  "Answering sockets") that decodes, calls a handler and answers every frame, garbage
  included, exactly once.
- ServiceLoop: one poller, timers, thread-safe wake-ups, SIGTERM/SIGINT shutdown.

Nothing here knows about trading.
"""
from __future__ import annotations

import collections
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import zmq
from loguru import logger

from common import hotpath
from common.messages import (
    DecodeError, Envelope, Heartbeat, Reply, SnapshotReply, SnapshotRequest,
    decode, encode, topic_of,
)

HWM = 100_000
# For a subscriber that needs only the latest quote (marks, the clock): a loop held up by a slow
# REST call must not queue 100,000 quotes in memory. What overflows is healed by a snapshot,
# which holds the latest quote (Clone pattern).
LATEST_ONLY_HWM = 2_000
NO_GAP_TOPICS = {b"Heartbeat"}   # losing a heartbeat is harmless; the next one arrives in a second

# Flags as plain ints: pyzmq's constants are enums, and combining or converting them costs more per
# message than the libzmq call they are passed to.
_NOBLOCK = int(zmq.NOBLOCK)
_SNDMORE = int(zmq.SNDMORE)
_POLLIN = int(zmq.POLLIN)
_NOBLOCK_MORE = _NOBLOCK | _SNDMORE


def context() -> zmq.Context:
    return zmq.Context.instance()


_send_frame = zmq.backend.Socket.send      # libzmq's send of one frame, under pyzmq's Python wrapper
_recv_frame = zmq.backend.Socket.recv      # the same for recv, called positionally: (socket, flags, copy)


class _Socket(zmq.Socket):
    """pyzmq's Socket, whose multipart send and receive call libzmq frame by frame directly.

    pyzmq's own wrap every frame in Python calls (overloads, routing-id checks, enum flags) that
    cost more than the frame: a quarter of a bus hop of a few hundred bytes. Anything but copied
    bytes frames takes pyzmq's path."""

    def send_multipart(self, msg_parts: Any, flags: int = 0, copy: bool = True, track: bool = False,
                       **kwargs: Any) -> Any:
        for part in msg_parts:      # all checked before the first frame goes: never half a message
            if type(part) is not bytes:
                return super().send_multipart(msg_parts, flags, copy=copy, track=track, **kwargs)
        if not copy or track or kwargs:
            return super().send_multipart(msg_parts, flags, copy=copy, track=track, **kwargs)
        flags = int(flags)
        last = len(msg_parts) - 1
        for i in range(last):
            _send_frame(self, msg_parts[i], flags | _SNDMORE)
        _send_frame(self, msg_parts[last], flags)
        return None

    def recv_multipart(self, flags: int = 0, copy: bool = True, track: bool = False) -> Any:
        if not copy or track:
            return super().recv_multipart(flags, copy=copy, track=track)
        flags = int(flags)
        parts = []
        while True:     # a Frame says whether more follow; getsockopt(RCVMORE) costs more (an enum lookup)
            frame = _recv_frame(self, flags, False)
            parts.append(frame.bytes)
            if not frame.more:
                return parts


def _socket(ctx: zmq.Context, kind: int) -> zmq.Socket:
    return ctx.socket(kind, socket_class=_Socket)


def _bind(sock: zmq.Socket, endpoint: str) -> None:
    if endpoint.startswith("ipc://"):
        path = endpoint[len("ipc://"):]
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as exc:
        raise OSError(f"cannot bind {endpoint}: {exc} (is another instance running?)") from None


# --------------------------------------------------------------------------
# Answering sockets (snapshots, commands, queries)
# --------------------------------------------------------------------------
# The server side of every request/reply pair is a ROUTER that does REP's envelope work itself.
# libzmq's REP drops a malformed envelope silently, and a raw connection that sent part of a
# message and hung up left a REP readable for a recv that blocked forever and sent the next
# caller's answer to the dead peer. A ROUTER hands over every complete message with its sender's
# identity, so each one gets exactly one answer, to the right caller, and never blocks.

def _answering_socket(ctx: zmq.Context, endpoint: str) -> zmq.Socket:
    sock = _socket(ctx, zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    _bind(sock, endpoint)
    return sock


def _answer_one(sock: zmq.Socket, name: str, answer: Callable[[list[bytes]], Any], seq: int = 0,
                wait_ms: int = 0) -> None:
    """Read one message from a ROUTER socket, if a whole one is there (waiting up to `wait_ms`,
    -1: until one is), and send its sender exactly one answer: `answer(body frames)`, or an
    error Reply if that raises."""
    if wait_ms > 0 and not zmq.zmq_poll([(sock, _POLLIN)], wait_ms):
        return
    flags = 0 if wait_ms < 0 else _NOBLOCK     # 0 blocks in libzmq: a ROUTER hands over whole messages only
    try:
        # The first frame, the sender's identity, always has more after it: it comes as bytes at
        # once, without a Frame object to ask.
        parts = [_recv_frame(sock, flags)]
    except zmq.Again:   # readable, but what arrived was no whole message (libzmq dropped it)
        return
    while True:
        frame = _recv_frame(sock, flags, False)
        parts.append(frame.bytes)
        if not frame.more:
            break
    head, body = split_envelope(parts)
    try:
        reply = answer(body)
    except Exception as exc:  # a bug here must not cost the caller its answer
        logger.exception(f"BUS: {name} failed answering a request: {exc}")
        reply = Reply(False, f"{type(exc).__name__}: {exc}")
    send_answer(sock, head, reply, name, seq)


def split_envelope(parts: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """A ROUTER message -> (the caller's routing envelope, the request's frames):
    [identity, labels..., b"", body...] from a REQ; [identity, body...] from a DEALER."""
    try:
        cut = parts.index(b"", 1) + 1
    except ValueError:
        cut = 1
    return parts[:cut], parts[cut:]


def send_answer(sock: zmq.Socket, head: list[bytes], reply: Any, name: str, seq: int = 0) -> None:
    """Send `reply` to the caller behind `head` (a ROUTER envelope, as received), now or later (a
    deferred answer keeps its envelope); a caller that is gone is no error.

    The frames go to libzmq one by one, without send_multipart's checks: they are bytes (the
    envelope as received, the encoded answer), and a ROUTER neither blocks nor fails half-way
    (a message for a caller that is gone or not reading is dropped whole)."""
    ts_ns = time.time_ns()
    try:
        frame = encode(reply, seq=seq, ts_ns=ts_ns, src=name)
    except Exception as exc:   # an answer that cannot be encoded becomes an error reply: still one frame
        logger.error(f"BUS: {name} could not encode its answer {type(reply).__name__}: {exc}")
        frame = encode(Reply(False, f"the answer could not be encoded ({type(exc).__name__})"),
                       seq=seq, ts_ns=ts_ns, src=name)
    try:
        for part in head:
            _send_frame(sock, part, _NOBLOCK_MORE)
        _send_frame(sock, frame, _NOBLOCK)
    except zmq.ZMQError as exc:   # the socket refused it (closed under us): nothing to answer
        logger.debug(f"BUS: {name}: answer dropped: {exc}")


def _one_frame(parts: list[bytes]) -> bytes:
    """A request is one frame."""
    if len(parts) != 1:
        raise DecodeError(f"a request is one frame; got {len(parts)} parts")
    return parts[0]


def _short(exc: Exception, limit: int = 300) -> str:
    """A decode error quotes the offending value; a megabyte of garbage must not become a
    megabyte of log line or of reply."""
    text = str(exc)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


# --------------------------------------------------------------------------
# Publisher (Clone server side)
# --------------------------------------------------------------------------

class Publisher:
    """PUB socket with per-topic sequence numbers, retained state and a snapshot REP socket."""

    def __init__(self, service: str, pub_endpoint: str, snapshot_endpoint: str | None = None,
                 ctx: zmq.Context | None = None, clock: Callable[[], int] | None = None):
        self.service = service
        self.ctx = ctx or context()
        self.clock = clock or time.time_ns
        self.epoch = time.time_ns()
        self.started = time.monotonic()
        self.sock = _socket(self.ctx, zmq.PUB)
        self.sock.setsockopt(zmq.SNDHWM, HWM)
        self.sock.setsockopt(zmq.LINGER, 500)
        _bind(self.sock, pub_endpoint)
        self.snap: zmq.Socket | None = None
        if snapshot_endpoint:
            self.snap = _answering_socket(self.ctx, snapshot_endpoint)
        self.seqs: dict[bytes, int] = collections.defaultdict(int)
        # (topic, key) -> frame; dict keeps insertion order = publication order for a snapshot
        self.retained: dict[tuple[bytes, str], bytes] = {}
        self.sent = 0

    def publish(self, msg: Any, *, key: str | None = None, forget: bool = False,
                ts_ns: int | None = None, hops: dict[str, int] | None = None) -> bytes:
        """Send `msg`. With `key` the message is retained for snapshots (last one per key);
        `forget=True` sends it and drops that key from the retained state (e.g. a closed order)."""
        topic = topic_of(msg)
        if topic == b"Heartbeat" and not msg.seqs:
            msg.seqs = {t.decode(): s for t, s in self.seqs.items() if t != b"Heartbeat"}
        seq = self.seqs[topic] + 1
        self.seqs[topic] = seq
        frame = encode(msg, seq=seq, ts_ns=self.clock() if ts_ns is None else ts_ns,
                       src=self.service, epoch=self.epoch, hops=hops)
        self.sock.send_multipart((topic, frame))     # copied: zero-copy costs more below 64 kB
        self.sent += 1
        if key is not None:
            rk = (topic, key)
            self.retained.pop(rk, None)
            if not forget:
                self.retained[rk] = frame
        return frame

    def heartbeat(self, state: str = "ok", exch_ns: int = 0, stats: dict | None = None) -> None:
        self.publish(Heartbeat(self.service, state, os.getpid(),
                               round(time.monotonic() - self.started, 3), exch_ns, stats or {}))

    def serve_snapshot(self) -> None:
        """Answer one snapshot request (call when the snapshot socket is readable). Every frame
        gets an answer, garbage included: a socket that skips one reply is wedged for good, and
        then no subscriber can heal a gap."""
        assert self.snap is not None
        _answer_one(self.snap, self.service, self._snapshot)

    def _snapshot(self, parts: list[bytes]) -> Any:
        try:
            req = decode(_one_frame(parts)).msg
            if not isinstance(req, SnapshotRequest):
                raise DecodeError(f"expected SnapshotRequest, got {type(req).__name__}")
            bad = [t for t in req.topics if not isinstance(t, str)]
            if bad:
                raise DecodeError(f"SnapshotRequest.topics holds {bad[0]!r}, expected topic names")
        except DecodeError as exc:
            logger.warning(f"BUS: {self.service} snapshot socket got a bad request: {_short(exc)}")
            return Reply(False, f"bad snapshot request: {_short(exc)}")
        wanted = {t.encode() for t in req.topics}
        frames = [f for (t, _), f in self.retained.items() if not wanted or t in wanted]
        seqs = {t.decode(): s for t, s in self.seqs.items() if not wanted or t in wanted}
        return SnapshotReply(self.epoch, seqs, frames)

    def attach(self, loop: "ServiceLoop") -> "Publisher":
        if self.snap is not None:
            loop.add_reader(self.snap, self.serve_snapshot)
        return self

    def close(self) -> None:
        self.sock.close()
        if self.snap is not None:
            self.snap.close()


# --------------------------------------------------------------------------
# Subscriber (Clone client side)
# --------------------------------------------------------------------------

@dataclass
class SubscriberStats:
    received: int = 0
    malformed: int = 0
    gaps: int = 0
    snapshots: int = 0
    snapshot_failures: int = 0
    stale_dropped: int = 0


class Subscriber:
    """SUB socket to one publisher, healed by snapshots on gaps, late joins and restarts.

    `drain()` returns every decoded envelope available now, in order, with snapshot
    content marked `snapshot=True`. Malformed frames are counted, logged and dropped.
    """

    def __init__(self, name: str, pub_endpoint: str, snapshot_endpoint: str | None,
                 topics: Iterable[str | type] = (), ctx: zmq.Context | None = None,
                 snapshot_timeout_ms: int = 500, hwm: int = HWM):
        self.name = name
        self.ctx = ctx or context()
        self.pub_endpoint = pub_endpoint
        self.snapshot_endpoint = snapshot_endpoint
        self.snapshot_timeout_ms = snapshot_timeout_ms
        self.topics = [t.__name__ if isinstance(t, type) else t for t in topics]
        self.sock = _socket(self.ctx, zmq.SUB)
        self.sock.setsockopt(zmq.RCVHWM, hwm)
        self.sock.setsockopt(zmq.LINGER, 0)
        for t in self.topics or [""]:
            self.sock.setsockopt(zmq.SUBSCRIBE, t.encode())
        self.sock.connect(pub_endpoint)
        self._readable = [(self.sock, _POLLIN)]
        self.stats = SubscriberStats()
        self.last_seq: dict[bytes, int] = {}
        self.epoch: int | None = None
        self.need_snapshot = snapshot_endpoint is not None
        self._pending: collections.deque[Envelope] = collections.deque()
        self._last_bad_log = 0.0

    # -- reading ---------------------------------------------------------
    def drain(self, max_messages: int = 10_000) -> list[Envelope]:
        out: list[Envelope] = []
        if self.need_snapshot:
            self.sync()
        while self._pending:
            out.append(self._pending.popleft())
        sock, pending = self.sock, self._pending
        for n in range(max_messages):
            # after the first message, ask whether another is there (zmq_poll, 0 ms): cheaper than
            # the zmq.Again a failed recv raises, which costs more than receiving a message
            if n and not zmq.zmq_poll(self._readable, 0):
                break
            try:
                parts = sock.recv_multipart(_NOBLOCK)
            except zmq.Again:
                break
            if len(parts) < 2:
                self._bad("frame with fewer than two parts")
                continue
            env = self._accept(parts[-2], parts[-1])
            if env is not None:
                out.append(env)
            while pending:
                out.append(pending.popleft())
        return out

    def recv(self, timeout_ms: int = 1000) -> list[Envelope]:
        """Block up to `timeout_ms` for at least one message (tests and simple tools)."""
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            got = self.drain()
            if got:
                return got
            left = deadline - time.monotonic()
            if left <= 0:
                return []
            self.sock.poll(max(1, int(left * 1000)))

    def _bad(self, why: str) -> None:
        self.stats.malformed += 1
        now = time.monotonic()
        if now - self._last_bad_log > 1.0:
            self._last_bad_log = now
            logger.warning(f"BUS: {self.name} dropped a malformed message from {self.pub_endpoint}: {why} "
                           f"({self.stats.malformed} so far)")

    def _accept(self, topic: bytes, frame: bytes) -> Envelope | None:
        try:
            env = decode(frame)
        except DecodeError as exc:
            self._bad(str(exc))
            return None
        self.stats.received += 1
        if self.snapshot_endpoint is None:
            return env
        if self.epoch is not None and env.epoch != self.epoch:
            # a heartbeat shows a restart too: a restarted publisher's first messages are often
            # lost before this socket reconnects, and then only its heartbeats arrive
            logger.warning(f"BUS: {self.name}: publisher {env.src} restarted (new epoch); resyncing")
            self.epoch = env.epoch
            self.last_seq.clear()
            if topic in NO_GAP_TOPICS:
                self.sync(force=True)
                return env
            self._pending.append(env)
            self.sync(force=True)
            return None
        if topic in NO_GAP_TOPICS:
            if topic == b"Heartbeat" and self._tail_lost(env):
                self.sync(force=True)
            return env
        last = self.last_seq.get(topic)
        if last is not None and env.seq <= last:
            self.stats.stale_dropped += 1   # already covered by a snapshot
            return None
        if last is not None and env.seq != last + 1:
            self.stats.gaps += 1
            logger.warning(f"BUS: {self.name}: gap on {topic.decode()} from {env.src} "
                           f"(expected {last + 1}, got {env.seq}); asking for a snapshot")
            self.last_seq[topic] = env.seq
            self._pending.append(env)
            self.sync(force=True)
            return None
        self.last_seq[topic] = env.seq
        if self.epoch is None:
            self.epoch = env.epoch
        return env

    def _tail_lost(self, env: Envelope) -> bool:
        """The publisher's heartbeat says it sent more on a topic of ours than we received."""
        seqs = getattr(env.msg, "seqs", None)
        if not seqs or not isinstance(seqs, dict) or self.need_snapshot or self.epoch is None:
            return False
        for name, sent in seqs.items():
            if (self.topics and name not in self.topics) or not isinstance(sent, int):
                continue
            got = self.last_seq.get(name.encode(), 0)
            if sent > got:
                self.stats.gaps += 1
                logger.warning(f"BUS: {self.name}: {env.src}'s heartbeat says {name} reached {sent}, "
                               f"received {got}; asking for a snapshot")
                return True
        return False

    # -- snapshot --------------------------------------------------------
    def sync(self, force: bool = False) -> bool:
        """Ask the publisher for its retained state; queue it ahead of live messages."""
        if self.snapshot_endpoint is None or (not force and not self.need_snapshot):
            return True
        req = self.ctx.socket(zmq.REQ)
        req.setsockopt(zmq.LINGER, 0)
        req.connect(self.snapshot_endpoint)
        try:
            req.send(encode(SnapshotRequest(self.topics), src=self.name))
            if not req.poll(self.snapshot_timeout_ms):
                self.stats.snapshot_failures += 1
                self.need_snapshot = True
                return False
            env = decode(req.recv())
        except (DecodeError, zmq.ZMQError) as exc:
            self.stats.snapshot_failures += 1
            self.need_snapshot = True
            logger.warning(f"BUS: {self.name}: snapshot from {self.snapshot_endpoint} failed: {exc}")
            return False
        finally:
            req.close()
        rep = env.msg
        if not isinstance(rep, SnapshotReply):     # the publisher refused the request: ask again later
            self.stats.snapshot_failures += 1
            self.need_snapshot = True
            logger.warning(f"BUS: {self.name}: {self.snapshot_endpoint} answered the snapshot request with "
                           f"{type(rep).__name__}: {getattr(rep, 'message', '')}")
            return False
        self.stats.snapshots += 1
        self.need_snapshot = False
        live = [e for e in self._pending if e.epoch == rep.epoch]
        self._pending.clear()
        self.epoch = rep.epoch
        for t, s in rep.seqs.items():
            self.last_seq[t.encode()] = s
        for f in rep.frames:
            try:
                e = decode(f)
            except DecodeError as exc:
                self._bad(f"in snapshot: {exc}")
                continue
            e.snapshot = True
            self._pending.append(e)
        # live messages that arrived before the snapshot and are newer than it
        for e in live:
            t = topic_of(e.msg)
            if e.seq > self.last_seq.get(t, 0):
                self.last_seq[t] = e.seq
                self._pending.append(e)
        return True

    def close(self) -> None:
        self.sock.close()


# --------------------------------------------------------------------------
# Lazy Pirate client and reply server
# --------------------------------------------------------------------------

class ServiceUnavailable(RuntimeError):
    """No answer after every retry: the server is down or wedged."""


class LazyPirateClient:
    """REQ client that survives a dead or restarted server without ever changing the request.

    The same encoded frame (same idempotency key, same seq) is resent after each
    timeout on a fresh socket, so a server that executed the first copy answers the
    copy with its first answer.
    """

    def __init__(self, name: str, endpoint: str, timeout_ms: int = 2500, retries: int = 3,
                 ctx: zmq.Context | None = None):
        self.name = name
        self.endpoint = endpoint
        self.timeout_ms = timeout_ms
        self.retries = retries
        self.ctx = ctx or context()
        self.sock: zmq.Socket | None = None
        self._timeout_set: int | None = None     # the open socket's RCVTIMEO
        self.seq = 0
        self.resends = 0

    def _open(self) -> zmq.Socket:
        sock = _socket(self.ctx, zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.endpoint)
        self._timeout_set = None
        return sock

    def request(self, msg: Any, timeout_ms: int | None = None, retries: int | None = None,
                hops: dict[str, int] | None = None, on_sent: Callable[[], None] | None = None) -> Envelope:
        """Send `msg`, wait for its answer. `on_sent` runs once the first try is on the wire,
        while the server works on it: the caller's bookkeeping (a log line, a publish) there
        costs the request nothing."""
        self.seq += 1
        frame = encode(msg, seq=self.seq, ts_ns=time.time_ns(), src=self.name, hops=hops)
        timeout = self.timeout_ms if timeout_ms is None else timeout_ms
        tries = 1 + (self.retries if retries is None else retries)
        for attempt in range(tries):
            if self.sock is None:
                self.sock = self._open()
            if self._timeout_set != timeout:
                self.sock.setsockopt(zmq.RCVTIMEO, int(timeout))
                self._timeout_set = timeout
            _send_frame(self.sock, frame, 0)
            if on_sent is not None and attempt == 0:
                try:
                    on_sent()
                except Exception as exc:  # the caller's bookkeeping must not cost the answer
                    logger.exception(f"BUS: {self.name}: after sending: {exc}")
            try:    # a blocking recv bounded by RCVTIMEO: one call into libzmq, like a bare REQ
                return decode(self.sock.recv())
            except zmq.Again:
                pass
            # Lazy Pirate: the REQ socket is now stuck; throw it away and try again
            self.sock.close()
            self.sock = None
            if attempt + 1 < tries:
                self.resends += 1
                logger.warning(f"BUS: {self.name}: no answer from {self.endpoint} in {timeout} ms; "
                               f"resending the same request ({attempt + 1}/{tries - 1})")
        raise ServiceUnavailable(f"{self.endpoint} did not answer {type(msg).__name__} "
                                 f"after {tries} tries of {timeout} ms")

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


class ReplyServer:
    """The REQ/REP server side: every request gets exactly one answer, garbage included."""

    def __init__(self, name: str, endpoint: str, handler: Callable[[Envelope], Any],
                 ctx: zmq.Context | None = None):
        self.name = name
        self.handler = handler
        self.ctx = ctx or context()
        self.sock = _answering_socket(self.ctx, endpoint)
        self.malformed = 0
        self.seq = 0

    def serve_one(self, wait_ms: int = 0) -> None:
        """Answer one request: the one that is there (from a ServiceLoop reader), or the first
        to arrive within `wait_ms` (-1: wait for it; a plain server loop)."""
        self.seq += 1
        _answer_one(self.sock, self.name, self._answer, self.seq, wait_ms)

    def _answer(self, parts: list[bytes]) -> Any:
        try:
            env = decode(_one_frame(parts))
        except DecodeError as exc:
            self.malformed += 1
            logger.warning(f"BUS: {self.name} got a malformed request: {_short(exc)}")
            return Reply(False, f"malformed request: {_short(exc)}")
        try:
            return self.handler(env)
        except Exception as exc:  # a handler bug must not cost the caller its answer
            logger.exception(f"BUS: {self.name} failed handling {env.type}: {exc}")
            return Reply(False, f"{type(exc).__name__}: {exc}")

    def attach(self, loop: "ServiceLoop") -> "ReplyServer":
        loop.add_reader(self.sock, self.serve_one)
        return self

    def close(self) -> None:
        self.sock.close()


# --------------------------------------------------------------------------
# Service loop
# --------------------------------------------------------------------------

@dataclass(order=True)
class _Timer:
    due: float
    interval: float = field(compare=False)
    fn: Callable[[], None] = field(compare=False)


class ServiceLoop:
    """Event loop over ZeroMQ sockets and fds, with timers.

    Callbacks run one at a time, so service state needs no locks: the loop thread holds
    `self.lock` except while it waits in its poll. Other threads (a SignalR client) hand
    work over with call_soon_threadsafe, or run it at once under the lock with
    run_threadsafe (no second thread to wake: the feed's quotes). SIGTERM and SIGINT stop
    the loop and then run the shutdown hooks in order.
    """

    def __init__(self, name: str):
        self.name = name
        self.poller = zmq.Poller()
        self.readers: dict[Any, Callable[[], None]] = {}
        self.timers: list[_Timer] = []
        self.shutdown_hooks: list[Callable[[], None]] = []
        self.running = False
        self.stop_reason = ""
        self._calls: collections.deque[Callable[[], None]] = collections.deque()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self.poller.register(self._wake_r, zmq.POLLIN)
        self._stop_requested = False
        # held by the loop thread except while it waits in its poll (re-entrant: a callback may
        # call run_threadsafe itself)
        self.lock = threading.RLock()
        self._ran_direct = False                    # a run_threadsafe call ran since the last poll
        self.hot = hotpath.current()      # gc + bar-boundary warm-up policy, if the process installed one
        # installed now, not in run(): a SIGTERM during a slow start-up (a broker
        # reconciliation) must still end in the shutdown hooks, not the default action
        if threading.current_thread() is threading.main_thread():
            self.install_signal_handlers()

    def hot_stats(self) -> dict[str, dict]:
        """The hot path's counters for a heartbeat's stats ({} without a policy)."""
        return {"hotpath": dict(self.hot.stats)} if self.hot is not None else {}

    def add_reader(self, sock: Any, fn: Callable[[], None]) -> None:
        self.readers[sock] = fn
        self.poller.register(sock, zmq.POLLIN)

    def remove_reader(self, sock: Any) -> None:
        if self.readers.pop(sock, None) is not None:
            self.poller.unregister(sock)

    def every(self, seconds: float, fn: Callable[[], None], first_in: float | None = None) -> None:
        self.timers.append(_Timer(time.monotonic() + (seconds if first_in is None else first_in), seconds, fn))

    def on_shutdown(self, fn: Callable[[], None]) -> None:
        self.shutdown_hooks.append(fn)

    def call_soon_threadsafe(self, fn: Callable[[], None]) -> None:
        self._calls.append(fn)
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass  # pipe full: the loop is already due to wake

    def run_threadsafe(self, fn: Callable[[], None]) -> None:
        """Run fn now on the calling thread if the loop is waiting in its poll, holding the
        loop's lock so callbacks still run one at a time; else queue it (call_soon_threadsafe).
        Why: waking the loop thread is a second wake-up per event, and on a busy 2-core box
        that wake-up alone cost up to 7 ms (the feed's p99, hub frame -> published)."""
        if not self.lock.acquire(blocking=False):
            self.call_soon_threadsafe(fn)           # the loop is busy: it sees the queue next
            return
        try:
            if not self.running:                    # before run() or after stop: keep the old order
                self.call_soon_threadsafe(fn)
                return
            while self._calls:                      # what was queued earlier runs first
                self._guard(self._calls.popleft())
            self._guard(fn)
            self._ran_direct = True                 # not idle: the hot path must not collect now
        finally:
            self.lock.release()

    def stop(self, reason: str = "stop requested") -> None:
        self.stop_reason = reason
        self._stop_requested = True
        self.running = False

    def install_signal_handlers(self) -> None:
        def handler(signum, _frame):
            self.stop(f"{signal.Signals(signum).name} received")
        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def run(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self.install_signal_handlers()
        with self.lock:
            self.running = not self._stop_requested     # a stop asked for before run() still counts
            if self.hot is not None:
                self.hot.start(self.name)                # started: freeze the heap, take gc over
        try:
            while self.running:
                self.run_once()
        finally:
            with self.lock:                              # no thread runs a call during the hooks
                self.running = False
                if self.hot is not None:
                    self.hot.stop()
                logger.info(f"{self.name}: stopping ({self.stop_reason or 'loop ended'})")
                for fn in self.shutdown_hooks:
                    try:
                        fn()
                    except Exception as exc:
                        logger.exception(f"{self.name}: shutdown step {getattr(fn, '__name__', fn)} failed: {exc}")

    def run_once(self, max_wait_ms: int = 100) -> None:
        with self.lock:
            now = time.monotonic()
            wait = max_wait_ms
            if self.timers:
                wait = max(0, min(wait, int((min(self.timers).due - now) * 1000)))
            if self.hot is not None:
                wait = self.hot.wait_ms(wait)            # awake (and warm) around the bar boundary
        try:
            events = dict(self.poller.poll(wait))        # the only time other threads may run calls
        except zmq.ZMQError as exc:
            if exc.errno == zmq.EINTR if hasattr(zmq, "EINTR") else False:
                return
            raise
        except InterruptedError:
            return
        with self.lock:
            self._handle(events)

    def _handle(self, events: dict) -> None:
        if self._wake_r in events:
            try:
                while os.read(self._wake_r, 4096):
                    pass
            except BlockingIOError:
                pass
        while self._calls:
            self._guard(self._calls.popleft())
        for sock, fn in list(self.readers.items()):
            if sock in events:
                self._guard(fn)
        now = time.monotonic()
        for t in self.timers:
            if t.due <= now:
                t.due = max(t.due + t.interval, now)
                self._guard(t.fn)
        busy, self._ran_direct = bool(events) or self._ran_direct, False
        if self.hot is not None:
            self.hot.after_poll(busy)                # collect garbage when idle, never mid-bar

    def _guard(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception as exc:
            logger.exception(f"{self.name}: {getattr(fn, '__qualname__', fn)} failed: {exc}")
