"""supervisord's event listener protocol (supervisord docs, "Events"), as pure functions.

The listener writes READY; supervisord sends one header line of `key:value` tokens, whose
`len` says how many payload bytes follow; the listener answers RESULT 2\\nOK and is READY
again. stdout is the protocol channel: a listener must print nothing else there.
"""
from __future__ import annotations

from dataclasses import dataclass

READY = b"READY\n"
OK = b"RESULT 2\nOK"


def tokens(line: str) -> dict[str, str]:
    """'processname:orders groupname:orders expected:0' -> {'processname': 'orders', ...}"""
    out = {}
    for tok in line.split():
        key, sep, value = tok.partition(":")
        if sep:
            out[key] = value
    return out


@dataclass
class Event:
    name: str                   # PROCESS_STATE_EXITED, ...
    headers: dict[str, str]
    body: dict[str, str]        # the payload's tokens (process state events are one line)


class Reader:
    """Bytes from stdin in, whole events out; any chunking of the stream gives the same events."""

    def __init__(self):
        self.buf = b""

    def feed(self, data: bytes) -> list[Event]:
        self.buf += data
        out = []
        while True:
            nl = self.buf.find(b"\n")
            if nl < 0:
                return out
            headers = tokens(self.buf[:nl].decode("utf-8", "replace"))
            try:
                size = int(headers.get("len", "0"))
            except ValueError:
                size = 0
            if len(self.buf) < nl + 1 + size:
                return out
            payload = self.buf[nl + 1: nl + 1 + size].decode("utf-8", "replace")
            self.buf = self.buf[nl + 1 + size:]
            first, _, _rest = payload.partition("\n")
            out.append(Event(headers.get("eventname", ""), headers, tokens(first)))
