"""The gateway's command socket: a REP socket whose answer never waits on the broker.

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

from common.bus import ReplyServer, ServiceLoop
from common.messages import DecodeError, OrderReply, Reply, decode
from services.orders.broker_io import Task


class CommandSocket(ReplyServer):
    def __init__(self, name: str, endpoint: str, handler: Callable[[Any], Any], answer_within_s: float,
                 on_early: Callable[[Task], None]):
        super().__init__(name, endpoint, handler)
        self.answer_within_s = answer_within_s
        self.on_early = on_early
        self.loop: ServiceLoop | None = None
        self.waiting: tuple[Task, float] | None = None
        self.answered_early = 0

    def attach(self, loop: ServiceLoop) -> "CommandSocket":
        self.loop = loop
        loop.add_reader(self.sock, self.serve_one)
        loop.every(0.02, self.check)
        return self

    def serve_one(self) -> None:
        frame = self.sock.recv()
        try:
            env = decode(frame)
        except DecodeError as exc:
            self.malformed += 1
            logger.warning(f"BUS: {self.name} got a malformed request: {exc}")
            self._send(Reply(False, f"malformed request: {exc}"))
            return
        try:
            answer = self.handler(env)
        except Exception as exc:  # a handler bug must not wedge the REP state machine
            logger.exception(f"BUS: {self.name} failed handling {env.type}: {exc}")
            answer = Reply(False, f"{type(exc).__name__}: {exc}")
        if isinstance(answer, Task):
            self.waiting = (answer, time.monotonic() + self.answer_within_s)
            self.loop.remove_reader(self.sock)
            answer.on_done(lambda _t: self.check())
            return
        self._send(answer)

    def check(self) -> None:
        if self.waiting is None:
            return
        task, deadline = self.waiting
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
        self._send(reply)
        self.loop.add_reader(self.sock, self.serve_one)
