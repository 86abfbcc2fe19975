"""The whole pipeline under a real supervisord, for end-to-end tests and drills.

Each test gets its own supervisord (UNIX control socket in its tmp dir), its own
config (ipc endpoints, logs in tmp) and its own simulator process, so tests can
kill -9 a service and watch supervisord bring it back while the rest trades.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import xmlrpc.client
from pathlib import Path

from supervisor.xmlrpc import SupervisorTransport

from tests.harness.procs import ROOT, wait_for

PIPELINE = ("feed", "positions", "orders", "inference", "engine")

PROGRAM = """
[program:{name}]
command={python} -m services.{name} --config {config}
directory={root}
priority={priority}
startsecs=1
startretries=50
autorestart=true
stopsignal=TERM
stopwaitsecs={stopwait}
stdout_logfile={logs}/{name}.out
redirect_stderr=true
"""

LISTENER = """
[eventlistener:supervision]
command={python} -m services.supervision --config {config}
directory={root}
events=PROCESS_STATE
buffer_size=100
priority=1
autorestart=true
stdout_logfile=NONE
stderr_logfile={logs}/supervision.out
"""

HEADER = """
[unix_http_server]
file={run}/supervisor.sock

[supervisord]
logfile={logs}/supervisord.log
pidfile={run}/supervisord.pid
childlogdir={logs}
nodaemon=true
environment=PYTHONUNBUFFERED="1"

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{run}/supervisor.sock
"""


class Pipeline:
    def __init__(self, tmp_path: Path, config: Path, services: tuple[str, ...] = PIPELINE,
                 listener: bool = False, programs: dict[str, dict[str, str]] | None = None):
        """`listener`: also run the supervision event listener (services/supervision), as
        supervisord.conf does; `programs`: per-program option overrides, e.g.
        {"orders": {"startsecs": "0", "autorestart": "unexpected", "exitcodes": "3"}}."""
        self.tmp = Path(tmp_path)
        self.config = Path(config)
        self.services = services
        self.run_dir = self.tmp / "sv"
        self.logs = self.tmp / "sv-logs"
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        self.conf = self.tmp / "supervisord.conf"
        parts = [HEADER.format(run=self.run_dir, logs=self.logs)]
        if listener:
            parts.append(LISTENER.format(python=sys.executable, config=self.config, root=ROOT, logs=self.logs))
        for i, name in enumerate(services):
            block = PROGRAM.format(name=name, python=sys.executable, config=self.config, root=ROOT,
                                   priority=10 * (i + 1), logs=self.logs, stopwait=45 if name == "orders" else 10)
            for key, value in ((programs or {}).get(name) or {}).items():
                lines = [line for line in block.splitlines() if not line.startswith(f"{key}=")]
                block = "\n".join(lines + [f"{key}={value}", ""])
            parts.append(block)
        self.conf.write_text("".join(parts))
        self.watched = services + (("supervision",) if listener else ())
        self.proc: subprocess.Popen | None = None
        self._rpc = None

    # -- lifecycle -------------------------------------------------------
    def start(self, timeout: float = 30) -> "Pipeline":
        exe = Path(sys.executable).with_name("supervisord")
        self.proc = subprocess.Popen([str(exe), "-c", str(self.conf)], cwd=ROOT,
                                     stdout=open(self.logs / "supervisord.stdout", "ab"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for(lambda: (self.run_dir / "supervisor.sock").exists(), 10, what="supervisord control socket")
            wait_for(lambda: all(self.state(n) == "RUNNING" for n in self.watched), timeout,
                     what="all services RUNNING")
        except AssertionError as exc:
            states = self.states()
            self.stop()           # a failed start must not leave supervisord and its children behind
            raise AssertionError(f"{exc}: {states}\n{self.tails()}") from None
        return self

    def stop(self, timeout: float = 60) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)   # supervisord stops programs in reverse priority
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def __enter__(self) -> "Pipeline":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- supervisor control ----------------------------------------------
    @property
    def rpc(self):
        if self._rpc is None:
            self._rpc = xmlrpc.client.ServerProxy(
                "http://127.0.0.1", transport=SupervisorTransport(None, None, f"unix://{self.run_dir}/supervisor.sock"))
        return self._rpc.supervisor

    def info(self, name: str) -> dict:
        return self.rpc.getProcessInfo(name)

    def state(self, name: str) -> str:
        try:
            return self.info(name)["statename"]
        except Exception:
            return "UNKNOWN"

    def states(self) -> dict[str, str]:
        return {n: self.state(n) for n in self.watched}

    def pid(self, name: str) -> int:
        return int(self.info(name)["pid"])

    def kill9(self, name: str, timeout: float = 30) -> int:
        """SIGKILL a service and wait until supervisord has it RUNNING again with a new pid."""
        old = self.pid(name)
        os.kill(old, signal.SIGKILL)
        wait_for(lambda: self.state(name) == "RUNNING" and self.pid(name) not in (0, old), timeout,
                 what=f"{name} restarted by supervisord")
        return self.pid(name)

    def restart(self, name: str) -> None:
        self.rpc.stopProcess(name, True)
        self.rpc.startProcess(name, True)

    def output(self, name: str) -> str:
        try:
            return (self.logs / f"{name}.out").read_text(errors="replace")
        except OSError:
            return ""

    def tails(self, n: int = 25) -> str:
        return "\n".join(f"--- {s} ---\n" + "\n".join(self.output(s).splitlines()[-n:]) for s in self.watched)


def memory_rss(pid: int) -> int:
    import psutil
    try:
        return psutil.Process(pid).memory_info().rss
    except psutil.Error:
        return 0


def now_s() -> float:
    return time.monotonic()
