"""Supervision process: a supervisord event listener ([eventlistener:supervision] in
supervisord.conf, events=PROCESS_STATE) that stops crash loops and says so on the bus.

    python -m services.supervision --config config/live_trading.yaml   (started by supervisord)

- A program that exits `max_exits` times within `window_min` minutes is stopped over
  supervisord's XML-RPC (stopProcess) and a `crash_loop` RiskEvent is published: the engine
  halts new entries, the alerts service tells the trader.
- A program in `critical_with_position` (the order gateway, the feed) exiting while the
  position keeper reports an open position is a `service_down` RiskEvent at once, cleared
  when it runs again.
- Heartbeats carry the exit counts for `scalper status`.
stdout is supervisord's protocol channel; logs go to stderr and the log files.
"""
from __future__ import annotations

import os
import sys
import time
import xmlrpc.client

from loguru import logger

from common.bus import LATEST_ONLY_HWM, Publisher, ServiceLoop, Subscriber
from common.messages import Heartbeat, Position, RiskEvent
from common.service import boot
from services.supervision import protocol
from services.supervision.config import SupervisionConfig
from services.supervision.crashloop import CrashWatch, position_text

SERVICE = "supervision"
EXITS = ("PROCESS_STATE_EXITED", "PROCESS_STATE_BACKOFF")   # BACKOFF: died before startsecs
NOT_RUNNING_FAULT = 70                                        # supervisor.xmlrpc.Faults.NOT_RUNNING


def rpc_interface():
    """supervisord's XML-RPC, from the SUPERVISOR_SERVER_URL it gives its children; None when
    not run by supervisord (then crash loops are reported but nothing can be stopped)."""
    if not os.environ.get("SUPERVISOR_SERVER_URL"):
        logger.warning("SUPERVISION: not started by supervisord (no SUPERVISOR_SERVER_URL); cannot stop programs")
        return None
    from supervisor import childutils
    return childutils.getRPCInterface(os.environ).supervisor


def stop_program(rpc, name: str, timeout_s: float) -> bool:
    """Ask supervisord to stop `name` until it is stopped: between an exit and the automatic
    restart the program is EXITED, which stopProcess refuses as NOT_RUNNING."""
    deadline = time.monotonic() + timeout_s
    while rpc is not None and time.monotonic() < deadline:
        try:
            rpc.stopProcess(name, False)
            return True
        except xmlrpc.client.Fault as exc:
            if exc.faultCode != NOT_RUNNING_FAULT:
                logger.error(f"SUPERVISION: cannot stop {name}: {exc.faultString}")
                return False
            if rpc.getProcessInfo(name)["statename"] in ("STOPPED", "FATAL"):
                return True
        except OSError as exc:
            logger.error(f"SUPERVISION: supervisord unreachable: {exc}")
            return False
        time.sleep(0.1)
    return False


class Supervision:
    def __init__(self, cfg, sect: SupervisionConfig, pub: Publisher, rpc, now=time.monotonic):
        self.cfg, self.sect, self.pub, self.rpc, self.now = cfg, sect, pub, rpc, now
        self.watch = CrashWatch(sect.max_exits, sect.window_min * 60)
        self.positions: dict[str, tuple[int, int]] = {}
        self.down: set[str] = set()
        self.halted: set[str] = set()     # stopped for a crash loop, and supervisord confirmed STOPPED

    def on_position(self, p: Position) -> None:
        self.positions[p.contract] = (p.direction, p.size)

    def on_event(self, ev: protocol.Event) -> None:
        name = ev.body.get("processname", "")
        group = ev.body.get("groupname", name)
        if not name or name == SERVICE:
            return
        if ev.name in EXITS:
            self.on_exit(name, group, ev.name)
        elif ev.name == "PROCESS_STATE_STOPPED" and name in self.watch.stopped:
            self.halted.add(name)
        elif ev.name == "PROCESS_STATE_RUNNING":
            self.on_running(name)

    def on_exit(self, name: str, group: str, event: str) -> None:
        how = "exited" if event == "PROCESS_STATE_EXITED" else "exited before it was up (BACKOFF)"
        logger.warning(f"SUPERVISION: {name} {how}")
        open_pos = position_text(self.positions)
        if name in self.sect.critical_with_position and open_pos and name not in self.down:
            self.down.add(name)
            self.risk("service_down", True, f"{name} went down while {open_pos} is open; the broker's stop "
                      "protects it; supervisord restarts it", key=f"service_down:{name}")
        if self.watch.on_exit(name, self.now()):
            stopped = stop_program(self.rpc, f"{group}:{name}", self.sect.stop_timeout_s)
            logger.error(f"SUPERVISION: crash loop: {self.watch.stopped[name]}; "
                         f"{'stopped' if stopped else 'COULD NOT STOP'} {name}")
            self.risk("crash_loop", True, self.watch.detail(), key="crash_loop")

    def on_running(self, name: str) -> None:
        if name in self.down:
            self.down.discard(name)
            self.risk("service_down", False, f"{name} running again", key=f"service_down:{name}")
        # a RUNNING event queued before our stop took effect is not the operator starting it again
        if name in self.halted and self.watch.on_running(name):
            self.halted.discard(name)
            logger.info(f"SUPERVISION: {name} started again after its crash loop")
            if self.watch.stopped:
                self.risk("crash_loop", True, self.watch.detail(), key="crash_loop")
            else:
                self.risk("crash_loop", False, f"{name} running again; no program is stopped for a crash loop",
                          key="crash_loop")

    def risk(self, kind: str, active: bool, detail: str, key: str) -> None:
        log = logger.error if active else logger.info
        log(f"RISK: {kind} {'TRIPPED' if active else 'CLEARED'}: {detail}")
        self.pub.publish(RiskEvent(kind, active, "ERROR" if active else "INFO", detail), key=key)

    def heartbeat(self) -> None:
        self.pub.publish(Heartbeat(SERVICE, "degraded" if self.watch.stopped else "ok", os.getpid(),
                                   round(time.monotonic() - self.pub.started, 3), 0,
                                   {"exits": self.watch.counts(self.now()), "exits_total": dict(self.watch.total),
                                    "stopped": sorted(self.watch.stopped), "max_exits": self.sect.max_exits,
                                    "window_min": self.sect.window_min}))


def main(argv: list[str] | None = None) -> int:
    cfg, sect, _clock = boot(SERVICE, SupervisionConfig, argv, __doc__)
    loop = ServiceLoop(SERVICE)
    try:
        pub = Publisher(SERVICE, cfg.bus.supervision_pub, cfg.bus.supervision_snap).attach(loop)
    except OSError as exc:
        logger.error(f"BUS: refusing to start: {exc}")
        return 2
    sup = Supervision(cfg, sect, pub, rpc_interface())
    positions = Subscriber(SERVICE, cfg.bus.positions_pub, cfg.bus.positions_snap, topics=[Position, Heartbeat],
                           hwm=LATEST_ONLY_HWM)

    def on_positions() -> None:
        for env in positions.drain():
            if isinstance(env.msg, Position):
                sup.on_position(env.msg)
    loop.add_reader(positions.sock, on_positions)

    reader = protocol.Reader()
    stdin = sys.stdin.fileno()
    os.set_blocking(stdin, False)

    def on_stdin() -> None:
        try:
            data = os.read(stdin, 65536)
        except BlockingIOError:
            return
        if not data:
            loop.stop("supervisord closed the event channel")
            return
        for ev in reader.feed(data):
            try:
                sup.on_event(ev)
            finally:
                os.write(1, protocol.OK)
                os.write(1, protocol.READY)
    loop.add_reader(stdin, on_stdin)
    loop.every(sect.heartbeat_s, sup.heartbeat, first_in=0.0)
    loop.on_shutdown(lambda: (positions.close(), pub.close()))
    logger.info(f"SUPERVISION: watching; a program exiting {sect.max_exits} times in {sect.window_min:g} min is "
                f"stopped; {', '.join(sect.critical_with_position)} going down with a position open is an alert")
    os.write(1, protocol.READY)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
