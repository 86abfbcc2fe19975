"""Loaded by every Python process under tests/anyday/run (PYTHONPATH).

libfaketime 0.9.10 shifts the wall clock; with FAKETIME_DONT_FAKE_MONOTONIC=1 (needed: a shifted
monotonic clock makes timed lock waits hang) its clock_nanosleep wrapper turns Python's absolute
monotonic deadline in time.sleep into EINVAL. A timed Event wait is a correct sleep under it, so
time.sleep is replaced by one, in these test processes only; nothing else is changed."""
import threading
import time

_real_sleep = time.sleep


def _sleep(seconds: float) -> None:
    if seconds < 0:
        raise ValueError("sleep length must be non-negative")
    if seconds:
        threading.Event().wait(seconds)
    else:
        _real_sleep(0)


time.sleep = _sleep
