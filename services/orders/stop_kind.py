"""A restart is not a shutdown: what a SIGTERM to the gateway means.

- supervisord is shutting down (Ctrl-C of `make run`, `supervisorctl shutdown`): the session
  ends, so the gateway cancels, flattens and verifies (the end-of-day flatten is separate: the
  guard does it at `trading.flatten_time` whatever the processes do).
- supervisord is running and stops only this program (`supervisorctl restart orders`, `stop
  orders`, autorestart): the gateway keeps a position whose stop is working at the broker and
  the next gateway adopts it; a position without a working stop is closed.
- no supervisord (started by hand, by a test): a stop ends trading, as before: flatten.
`orders.on_stop` overrides the choice: `flatten` or `keep`.
"""
from __future__ import annotations

import os
import xmlrpc.client
from typing import Mapping

from loguru import logger

SHUTDOWN, RESTART = "shutdown", "restart"


def stop_kind(policy: str = "auto", env: Mapping[str, str] | None = None, rpc=None) -> str:
    env = os.environ if env is None else env
    if policy == "flatten":
        return SHUTDOWN
    if policy == "keep":
        return RESTART
    if not env.get("SUPERVISOR_SERVER_URL") and rpc is None:
        return SHUTDOWN
    try:
        if rpc is None:
            from supervisor import childutils
            rpc = childutils.getRPCInterface(dict(env))
        state = rpc.supervisor.getState().get("statename")
    except xmlrpc.client.Fault as exc:
        if exc.faultString == "SHUTDOWN_STATE":  # supervisord refuses calls while it shuts down: that is the answer
            return SHUTDOWN
        logger.warning(f"SHUTDOWN: cannot ask supervisord whether it is shutting down ({exc}); flattening")
        return SHUTDOWN
    except Exception as exc:                 # cannot tell: the safe side is flat
        logger.warning(f"SHUTDOWN: cannot ask supervisord whether it is shutting down ({exc}); flattening")
        return SHUTDOWN
    return SHUTDOWN if state == "SHUTDOWN" else RESTART
