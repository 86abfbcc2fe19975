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


import zmq

from common.bus import ReplyServer, ServiceLoop, send_answer, split_envelope
from common.messages import OrderReply, Reply
from services.orders.broker_io import Task


class CommandSocket(ReplyServer):
    """A ReplyServer (a ROUTER doing REP's envelope work, so any frame gets exactly one answer)
    whose answer may be deferred: the caller's envelope is kept until the flow is done or
    `answer_within_s` has passed."""

    def __init__(self, name: str, endpoint: str, handler: Callable[[Any], Any], answer_within_s: float,
                 on_early: Callable[[Task], None]):
        super().__init__(name, endpoint, handler)
        self.answer_within_s = answer_within_s
        self.on_early = on_early
        self.loop: ServiceLoop | None = None
        self.waiting: tuple[Task, float, list[bytes]] | None = None
        self.answered_early = 0

    def refuse_for(self, seconds: float, why: str) -> None:
        """Before the loop runs (the start-up wait for a broker that is not up yet): for
        `seconds`, answer every request at once with a refusal that says why, instead of leaving
        it unanswered in the socket (an operator's `scalper status` learns the gateway is starting)."""
        handler = self.handler
        self.handler = lambda env: OrderReply(str(getattr(env.msg, "key", "") or ""), False, "starting", why)
        try:
            end = time.monotonic() + seconds
            while (left := end - time.monotonic()) > 0:
                ReplyServer.serve_one(self, max(1, int(left * 1000)))
        finally:
            self.handler = handler

    def attach(self, loop: ServiceLoop) -> "CommandSocket":
        self.loop = loop
        loop.add_reader(self.sock, self.serve_one)
        loop.every(0.02, self.check)
        return self

    def serve_one(self, wait_ms: int = 0) -> None:
        try:
            parts = self.sock.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:      # readable, but no whole message arrived
            return
        head, body = split_envelope(parts)
        answer = self._answer(body)      # decode and handle; garbage and handler bugs -> an error Reply
        if isinstance(answer, Task):
            self.waiting = (answer, time.monotonic() + self.answer_within_s, head)
            self.loop.remove_reader(self.sock)
            answer.on_done(lambda _t: self.check())
            return
        self._send(head, answer)

    def _send(self, head: list[bytes], reply: Any) -> None:
        self.seq += 1
        send_answer(self.sock, head, reply, self.name, self.seq)

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
