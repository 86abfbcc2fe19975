"""What supervisord says about each program, read over its local control socket.

A service that is silent because supervisord stopped it (an operator's `supervisorctl stop`,
the ordered shutdown of `make run`) is not an outage. A daemon thread asks `getAllProcessInfo`
every few seconds and hands {program: state} to a callback; no socket, no states (the callback
gets {} and silence is judged on heartbeats alone).
"""
from __future__ import annotations

import socket
import threading
import xmlrpc.client
from pathlib import Path
from typing import Callable

from loguru import logger
from supervisor.xmlrpc import Faults, SupervisorTransport, UnixStreamHTTPConnection


class _TimedConnection(UnixStreamHTTPConnection):
    """supervisor's UNIX-socket HTTP connection, with a timeout (its own has none)."""

    def __init__(self, socketfile: str, timeout_s: float):
        super().__init__("localhost")
        self.socketfile, self.timeout_s = socketfile, timeout_s

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout_s)
        self.sock.connect(self.socketfile)


def read_states(sock_path: Path, timeout_s: float = 2.0) -> dict[str, str]:
    """{program name: state name}, e.g. {"orders": "RUNNING", "engine": "STOPPED"};
    {"*": "SHUTDOWN"} while supervisord shuts down (it answers nothing else then)."""
    transport = SupervisorTransport(None, None, f"unix://{sock_path}")
    transport._get_connection = lambda: _TimedConnection(str(sock_path), timeout_s)
    proxy = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)
    try:
        return {p["name"]: p["statename"] for p in proxy.supervisor.getAllProcessInfo()}
    except xmlrpc.client.Fault as exc:
        if exc.faultCode == Faults.SHUTDOWN_STATE:
            return {"*": "SHUTDOWN"}      # supervisord is stopping every program, in order
        raise
    finally:
        transport.close()


class SupervisorWatch:
    def __init__(self, sock_path: Path, on_states: Callable[[dict[str, str]], None], interval_s: float = 2.0):
        self.sock_path, self.on_states, self.interval_s = sock_path, on_states, interval_s
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="alerts-supervisor", daemon=True)
        self._failing = False

    def start(self) -> "SupervisorWatch":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                states = read_states(self.sock_path) if self.sock_path.exists() else {}
                if self._failing:
                    logger.info(f"ALERT: supervisord states readable again from {self.sock_path}")
                self._failing = False
            except (OSError, xmlrpc.client.Error) as exc:
                states = {}
                if not self._failing:
                    logger.warning(f"ALERT: cannot read supervisord states from {self.sock_path} "
                                   f"({type(exc).__name__}); silent services are judged on heartbeats alone")
                self._failing = True
            self.on_states(states)
            self.stopping.wait(self.interval_s)
