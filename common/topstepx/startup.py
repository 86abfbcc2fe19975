"""Start-up against a broker that may not be up yet (a loaded box, the simulator still starting,
the broker's maintenance window): wait for it instead of exiting, so supervisord does not
restart a service that had nothing wrong with it.

What is waited for and what ends the process, decided here once:
- not reachable (connection refused, no answer in time, HTTP 5xx, an answer that is not JSON,
  HTTP 429): one WARNING line per attempt naming the step, the error, the attempt and the wait,
  then try again with a doubling pause (capped), for as long as it takes;
- refused (HTTP 401 or a login the broker says no to: bad credentials; any other HTTP 4xx: a
  wrong api.base_url; the broker answering success=false): raised at once; the caller ends the
  process with one line. Waiting does not fix a config.
Log lines carry the broker's one-line error text only: the client never puts the API key or a
token in it (and the logging registers tokens as secrets).
"""
from __future__ import annotations

import time
from typing import Callable, TypeVar

from loguru import logger

from common.topstepx.rest import OutcomeUnknown, RateLimited

T = TypeVar("T")

TRANSIENT = (OutcomeUnknown, RateLimited)


def until_reachable(what: str, fn: Callable[[], T], *, first_s: float = 0.5, max_s: float = 10.0,
                    sleep: Callable[[float], None] = time.sleep, prefix: str = "API",
                    give_up_s: float | None = None) -> T:
    """fn() once the broker answers it. Transient failures are retried (see the module doc);
    anything else fn raises is raised at once. A service waits for as long as it takes; a
    one-shot tool (`scalper check`) gives up after `give_up_s` and raises the last failure."""
    attempt = 0
    pause = first_s
    t0 = time.monotonic()
    while True:
        attempt += 1
        try:
            return fn()
        except TRANSIENT as exc:
            if give_up_s is not None and time.monotonic() - t0 + pause > give_up_s:
                raise
            logger.warning(f"{prefix}: {what}: broker not reachable ({exc}); attempt {attempt}, "
                           f"{time.monotonic() - t0:.0f} s waited; next try in {pause:.1f} s "
                           "(is the broker or the simulator up? api.base_url right?)")
        sleep(pause)
        pause = min(max_s, pause * 2)
