"""The engine's question to the order gateway, "what is your status?", asked without ever
blocking the engine's loop: a dead, restarted or hung gateway makes the engine's view of it
stale (no entry goes out against it), never a deaf engine."""
from __future__ import annotations

import time

import zmq
from loguru import logger
from zmq.utils.monitor import recv_monitor_message

from common.bus import context
from common.messages import DecodeError, OrderCommand, OrderReply, decode, encode

SERVICE = "engine"


class StatusAsker:
    """The gateway's `status`, asked without ever blocking the loop: one DEALER socket (a dead or
    restarted gateway never leaves it stuck, as it would a REQ), read by the loop; an answer is
    matched by its key. Unanswered within `timeout_s` (or no gateway connected at all), the
    engine's view of the gateway is stale: `on_silence` says so, and the next question goes out
    `retry_s` later."""

    def __init__(self, endpoint: str, timeout_s: float, retry_s: float, on_status, on_silence):
        self.sock = context().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.IMMEDIATE, 1)     # no queue for a gateway that is not there
        self.sock.setsockopt(zmq.SNDHWM, 4)
        # the gateway's connection itself: a kill -9 closes it at once, so the view is stale
        # before any question times out (and before a command would wait on a dead socket)
        self.monitor = self.sock.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
        self.sock.connect(endpoint)
        self.timeout_s = timeout_s
        self.retry_s = retry_s
        self.on_status = on_status
        self.on_silence = on_silence
        self.key: str | None = None
        self.sent = 0.0
        self.seq = 0
        self.silent = False

    def poll(self, wanted: bool) -> None:
        """From a loop timer: give up on an old question, ask a new one when `wanted`."""
        now = time.monotonic()
        if self.key is not None:
            if now - self.sent < self.timeout_s:
                return
            self.key = None
            self.silent = True
            self.on_silence(f"no answer to status in {self.timeout_s:g} s")
        if not wanted or (self.silent and now - self.sent < self.retry_s):
            return
        self.seq += 1
        key = f"status-{time.time_ns()}"
        self.sent = now
        try:
            self.sock.send(encode(OrderCommand(key, "status"), seq=self.seq, ts_ns=time.time_ns(), src=SERVICE),
                           zmq.NOBLOCK)
        except zmq.Again:
            self.silent = True
            self.on_silence("the order gateway is not connected")
            return
        self.key = key

    def on_connection(self) -> None:
        while True:
            try:
                event = recv_monitor_message(self.monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            if event["event"] == zmq.EVENT_DISCONNECTED:
                self.key = None
                self.silent = True
                self.on_silence("the order gateway disconnected")
            elif event["event"] == zmq.EVENT_CONNECTED:
                self.silent = False          # (re)connected: ask at once, not a retry later
                self.sent = 0.0

    def on_readable(self) -> None:
        while True:
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                env = decode(frames[-1])
            except DecodeError as exc:
                logger.warning(f"ENGINE: a malformed status answer: {exc}")
                continue
            msg = env.msg
            if not isinstance(msg, OrderReply) or msg.key != self.key:
                continue              # an answer to a question already given up on
            self.key = None
            self.silent = False
            if msg.ok:
                self.on_status(msg.detail)
            else:
                logger.warning(f"ENGINE: gateway status refused: {msg}")

    def close(self) -> None:
        self.sock.disable_monitor()
        self.monitor.close()
        self.sock.close()
