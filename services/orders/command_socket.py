"""The gateway's command socket: an answering (ROUTER) socket whose answer never waits on the broker.

A command the gateway can settle without the broker (status, halt, resume, a refusal) is
answered at once. One that needs the broker runs as a flow; the socket waits for it at most
`answer_within_s` (the loop keeps running meanwhile: heartbeats, hub events, other flows), then
answers either the outcome or `accepted` with the idempotency key, and the outcome follows on
the bus. While one answer is pending, the socket is not read (REP answers one request at a
time), so the next command waits at most `answer_within_s`.
"""
from __future__ import annotations

import time
from typing import Any, Callable

from loguru import logger

import zmq

from common.bus import ReplyServer, ServiceLoop, _encode_reply, _one_frame, _short
from common.messages import DecodeError, OrderReply, Reply, decode
from services.orders.broker_io import Task


class CommandSocket(ReplyServer):
    def __init__(self, name: str, endpoint: str, handler: Callable[[Any], Any], answer_within_s: float,
                 on_early: Callable[[Task], None]):
        super().__init__(name, endpoint, handler)
        self.answer_within_s = answer_within_s
        self.on_early = on_early
        self.loop: ServiceLoop | None = None
        self.waiting: tuple[Task, float, list[bytes]] | None = None
        self.answered_early = 0

    def attach(self, loop: ServiceLoop) -> "CommandSocket":
        self.loop = loop
        loop.add_reader(self.sock, self.serve_one)
        loop.every(0.02, self.check)
        return self

    def serve_one(self, wait_ms: int = 0) -> None:
        """One request from the ROUTER socket (common/bus.py): [sender identity ..., b"", frame]."""
        try:
            parts = self.sock.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return
        cut = parts.index(b"", 1) + 1 if b"" in parts[1:] else 1
        head, body = parts[:cut], parts[cut:]
        try:
            env = decode(_one_frame(body))
        except DecodeError as exc:
            self.malformed += 1
            logger.warning(f"BUS: {self.name} got a malformed request: {_short(exc)}")
            self._send(head, Reply(False, f"malformed request: {_short(exc)}"))
            return
        try:
            answer = self.handler(env)
        except Exception as exc:  # a handler bug must not cost the caller its answer
            logger.exception(f"BUS: {self.name} failed handling {env.type}: {exc}")
            answer = Reply(False, f"{type(exc).__name__}: {exc}")
        if isinstance(answer, Task):
            self.waiting = (answer, time.monotonic() + self.answer_within_s, head)
            self.loop.remove_reader(self.sock)
            answer.on_done(lambda _t: self.check())
            return
        self._send(head, answer)

    def _send(self, head: list[bytes], reply: Any) -> None:
        self.seq += 1
        try:
            self.sock.send_multipart([*head, _encode_reply(reply, self.name, seq=self.seq, ts_ns=time.time_ns())],
                                     zmq.NOBLOCK)
        except zmq.ZMQError as exc:   # the caller is gone: nothing to answer
            logger.debug(f"BUS: {self.name}: answer dropped: {exc}")

    def check(self) -> None:
        if self.waiting is None:
            return
        task, deadline, head = self.waiting
        if task.done:
            reply = task.result if isinstance(task.result, OrderReply) else \
                Reply(False, f"{task.name} failed: {task.error}")
        elif time.monotonic() >= deadline:
            key = task.name.split(" ", 1)[-1]
            reply = OrderReply(key, True, "accepted", f"{task.name.split(' ')[0]} in progress; "
                               "the outcome follows on the bus", {"pending": True, "key": key})
            self.answered_early += 1
            self.on_early(task)
        else:
            return
        self.waiting = None
        self._send(head, reply)
        self.loop.add_reader(self.sock, self.serve_one)
