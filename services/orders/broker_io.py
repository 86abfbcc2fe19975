"""Broker I/O off the gateway's loop.

The gateway's work is written as flows: generators that yield a `Call` (one REST call, with a
priority class and a deadline), a `Sleep`, or a `Join` (wait for flows spawned side by side, so
two calls are on the wire at once), and get the call's result (or its exception) sent back in.
A `Runner` drives them:
- `InlineRunner` runs a flow to its end at once, in the caller's thread (unit tests against a
  scripted broker, start-up, shutdown);
- `LoopRunner` hands each call to a `BrokerPool` of worker threads and resumes the flow on the
  loop's thread when the result comes back (an event), so the loop never waits on the broker:
  heartbeats keep their cadence, commands are answered, halt acts at once.

Priority classes: the pool always takes the most urgent queued call, and one worker only ever
takes protection and exits, so a slow poll or entry can never hold up a stop.
"""
from __future__ import annotations

import heapq
import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Generator

from loguru import logger

from common.topstepx.budget import urgent
from common.topstepx.rest import TopstepXError

# priority classes, most urgent first: a flatten jumps the queue; then stop/target and the cancel of
# the other leg; exits; entries; polls and searches
FLATTEN, PROTECT, EXIT, ENTRY, POLL = -1, 0, 1, 2, 3
CLASS_NAMES = {FLATTEN: "flatten", PROTECT: "protect", EXIT: "exit", ENTRY: "entry", POLL: "poll"}
DEADLINE_S = {FLATTEN: 10.0, PROTECT: 10.0, EXIT: 10.0, ENTRY: 3.0, POLL: 15.0}


class DeadlineExceeded(TopstepXError):
    """A call that waited in the queue past its deadline: not sent (it would act on a stale view)."""


class Dropped(TopstepXError):
    """A queued call dropped because something more urgent made it moot (a flatten drops entries)."""


@dataclass
class Call:
    fn: Callable[..., Any]
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    prio: int = POLL
    deadline_s: float | None = None

    @property
    def name(self) -> str:
        return getattr(self.fn, "__name__", "call")


@dataclass
class Sleep:
    seconds: float


@dataclass
class Join:
    """Resume when every one of these tasks is done (their results are read from the tasks)."""
    tasks: list


def pending(tasks: list) -> list:
    return [t for t in tasks if not t.done]


Flow = Generator[Any, Any, Any]


def call(fn: Callable[..., Any], *args, prio: int = POLL, deadline_s: float | None = None, **kwargs) -> Call:
    return Call(fn, args, kwargs, prio, deadline_s)


# --------------------------------------------------------------------------
# the worker pool
# --------------------------------------------------------------------------

@dataclass(order=True)
class _Job:
    prio: int
    seq: int
    due: float = field(compare=False)
    call: Call = field(compare=False)
    done: Callable[[Any, BaseException | None], None] = field(compare=False)


class BrokerPool:
    """Worker threads over one priority queue. `urgent_workers` of them take only PROTECT and EXIT
    calls. `done(result, exc)` is called from the worker thread; the LoopRunner hands it to the
    loop with call_soon_threadsafe."""

    def __init__(self, workers: int = 3, urgent_workers: int = 1, name: str = "broker"):
        self.q: list[_Job] = []
        self.cv = threading.Condition()
        self.seq = itertools.count()
        self.stopping = False
        self.busy = 0
        self.stats = {"calls": 0, "late": 0, "dropped": 0}
        self.threads = [threading.Thread(target=self._work, args=(i < urgent_workers,), name=f"{name}-{i}",
                                         daemon=True) for i in range(workers)]
        for t in self.threads:
            t.start()

    def submit(self, c: Call, done: Callable[[Any, BaseException | None], None]) -> None:
        deadline = c.deadline_s if c.deadline_s is not None else DEADLINE_S.get(c.prio, 10.0)
        with self.cv:
            heapq.heappush(self.q, _Job(c.prio, next(self.seq), time.monotonic() + deadline, c, done))
            self.cv.notify_all()

    def drop(self, prio: int, why: str) -> int:
        """Drop every queued call of this class (not the ones already running)."""
        with self.cv:
            keep = [j for j in self.q if j.prio != prio]
            gone = [j for j in self.q if j.prio == prio]
            self.q = keep
            heapq.heapify(self.q)
        for j in gone:
            self.stats["dropped"] += 1
            j.done(None, Dropped(f"{j.call.name}: dropped ({why})"))
        return len(gone)

    def queued(self) -> dict[str, int]:
        with self.cv:
            out: dict[str, int] = {}
            for j in self.q:
                out[CLASS_NAMES.get(j.prio, str(j.prio))] = out.get(CLASS_NAMES.get(j.prio, str(j.prio)), 0) + 1
            return out

    def _take(self, urgent_only: bool) -> _Job | None:
        with self.cv:
            while not self.stopping:
                if self.q and (not urgent_only or self.q[0].prio <= EXIT):
                    self.busy += 1
                    return heapq.heappop(self.q)
                self.cv.wait(0.5)
            return None

    def _work(self, urgent_only: bool) -> None:
        while True:
            job = self._take(urgent_only)
            if job is None:
                return
            try:
                if time.monotonic() > job.due:
                    self.stats["late"] += 1
                    job.done(None, DeadlineExceeded(f"{job.call.name}: not sent, waited past its deadline"))
                    continue
                self.stats["calls"] += 1
                try:
                    with urgent(job.prio <= PROTECT):      # may use the REST budget's reserve
                        res = job.call.fn(*job.call.args, **job.call.kwargs)
                except BaseException as exc:          # handed to the flow, which decides
                    job.done(None, exc)
                else:
                    job.done(res, None)
            except Exception as exc:                  # a broken callback must not kill the worker
                logger.exception(f"BROKER: worker callback failed: {exc}")
            finally:
                with self.cv:
                    self.busy -= 1

    def stop(self, timeout_s: float = 2.0) -> None:
        with self.cv:
            self.stopping = True
            self.cv.notify_all()
        for t in self.threads:
            t.join(timeout_s)


# --------------------------------------------------------------------------
# runners
# --------------------------------------------------------------------------

class Task:
    """One running flow. `result`/`error` once `done`; `on_done` callbacks run on completion."""

    def __init__(self, gen: Flow, name: str):
        self.gen = gen
        self.name = name
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None
        self.callbacks: list[Callable[["Task"], None]] = []
        self.t0 = time.monotonic()

    def on_done(self, fn: Callable[["Task"], None]) -> None:
        if self.done:
            fn(self)
        else:
            self.callbacks.append(fn)

    def _finish(self, result: Any, error: BaseException | None) -> None:
        self.done, self.result, self.error = True, result, error
        if error is not None:
            logger.opt(exception=error).error(f"FLOW: {self.name} failed: {error}")
        for fn in self.callbacks:
            try:
                fn(self)
            except Exception as exc:
                logger.exception(f"FLOW: {self.name} completion failed: {exc}")


class InlineRunner:
    """Runs a flow to its end now, in this thread. Sleeps really sleep (scaled by `sleep_scale`)."""

    def __init__(self, sleep_scale: float = 1.0):
        self.sleep_scale = sleep_scale

    def spawn(self, gen: Flow, name: str = "flow") -> Task:
        task = Task(gen, name)
        value: Any = None
        exc: BaseException | None = None
        while True:
            try:
                step = gen.throw(exc) if exc is not None else gen.send(value)
            except StopIteration as stop:
                task._finish(stop.value, None)
                return task
            except Exception as err:
                task._finish(None, err)
                return task
            value, exc = None, None
            if isinstance(step, Sleep):
                time.sleep(step.seconds * self.sleep_scale)
            elif isinstance(step, Join):
                if pending(step.tasks):       # inline, a spawned flow is done before spawn returns
                    exc = RuntimeError("a flow joined tasks that are still running under the InlineRunner")
            elif isinstance(step, Call):
                try:
                    with urgent(step.prio <= PROTECT):
                        value = step.fn(*step.args, **step.kwargs)
                except Exception as err:
                    exc = err
            else:
                exc = TypeError(f"a flow yielded {type(step).__name__}, expected Call, Sleep or Join")

    def tick(self) -> None:
        pass

    def idle(self) -> bool:
        return True


class LoopRunner:
    """Drives flows on the service loop: calls go to the pool, results come back as loop events,
    sleeps are timers checked by `tick()` (the loop calls it every few ms)."""

    def __init__(self, pool: BrokerPool, call_soon_threadsafe: Callable[[Callable[[], None]], None]):
        self.pool = pool
        self.call_soon = call_soon_threadsafe
        self.sleepers: list[tuple[float, int, Task]] = []
        self.seq = itertools.count()
        self.running: set[Task] = set()

    def spawn(self, gen: Flow, name: str = "flow") -> Task:
        task = Task(gen, name)
        self.running.add(task)
        self._step(task, None, None)
        return task

    def _step(self, task: Task, value: Any, exc: BaseException | None) -> None:
        while True:
            try:
                step = task.gen.throw(exc) if exc is not None else task.gen.send(value)
            except StopIteration as stop:
                self.running.discard(task)
                task._finish(stop.value, None)
                return
            except Exception as err:
                self.running.discard(task)
                task._finish(None, err)
                return
            if isinstance(step, Sleep):
                heapq.heappush(self.sleepers, (time.monotonic() + step.seconds, next(self.seq), task))
                return
            if isinstance(step, Call):
                def done(res, err, task=task):
                    self.call_soon(lambda: self._step(task, res, err))
                self.pool.submit(step, done)
                return
            if isinstance(step, Join):
                waiting = pending(step.tasks)
                if not waiting:
                    value, exc = None, None
                    continue
                left = [len(waiting)]

                def joined(_t, task=task, left=left):
                    left[0] -= 1
                    if left[0] == 0:          # on the loop's thread: the last one resumes the flow
                        self._step(task, None, None)
                for t in waiting:
                    t.on_done(joined)
                return
            value, exc = None, TypeError(f"a flow yielded {type(step).__name__}, expected Call, Sleep or Join")

    def tick(self) -> None:
        now = time.monotonic()
        while self.sleepers and self.sleepers[0][0] <= now:
            _, _, task = heapq.heappop(self.sleepers)
            self._step(task, None, None)

    def idle(self) -> bool:
        return not self.running
