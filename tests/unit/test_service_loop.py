"""ServiceLoop's hand-overs from other threads: run_threadsafe runs a call at once on the
calling thread while the loop waits in its poll, one callback at a time, in order."""
from __future__ import annotations

import threading
import time

from common.bus import ServiceLoop


def _running(loop: ServiceLoop) -> threading.Thread:
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while not loop.running and time.monotonic() < deadline:
        time.sleep(0.001)
    time.sleep(0.02)               # in its (100 ms) poll by now
    return thread


def _stop(loop: ServiceLoop, thread: threading.Thread) -> None:
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    assert not thread.is_alive()


def test_an_idle_loop_runs_the_call_on_the_calling_thread_at_once():
    loop = ServiceLoop("test")
    thread = _running(loop)
    seen = []
    loop.run_threadsafe(lambda: seen.append(threading.current_thread()))
    assert seen == [threading.current_thread()]        # done before run_threadsafe returned
    _stop(loop, thread)


def test_calls_queued_earlier_run_first():
    loop = ServiceLoop("test")
    thread = _running(loop)
    order = []
    with loop.lock:                # the loop is "busy": this one is queued
        loop.call_soon_threadsafe(lambda: order.append("queued"))
    loop.run_threadsafe(lambda: order.append("direct"))
    time.sleep(0.05)
    assert order == ["queued", "direct"]
    _stop(loop, thread)


def test_a_busy_loop_gets_the_call_on_its_own_thread():
    loop = ServiceLoop("test")
    thread = _running(loop)
    seen = []
    release = threading.Event()
    loop.call_soon_threadsafe(release.wait)    # the loop thread is inside a callback now
    time.sleep(0.05)
    loop.run_threadsafe(lambda: seen.append(threading.current_thread()))
    assert seen == []
    release.set()
    deadline = time.monotonic() + 2
    while not seen and time.monotonic() < deadline:
        time.sleep(0.005)
    assert seen == [thread]
    _stop(loop, thread)


def test_before_run_and_after_stop_calls_wait_in_the_queue():
    loop = ServiceLoop("test")
    seen = []
    loop.run_threadsafe(lambda: seen.append("early"))
    assert seen == []                          # not yet running: queued
    loop.run_once(0)
    assert seen == ["early"]
    thread = _running(loop)
    _stop(loop, thread)
    loop.run_threadsafe(lambda: seen.append("late"))
    assert seen == ["early"]                   # never run on the caller once stopped
