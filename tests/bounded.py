"""Calls that must return, not hang: a FIFO or a device in place of a file must be refused at once, and a test
of that must fail, not stall the suite, when it is not."""

from __future__ import annotations

import os
import stat
import threading

import pytest


def within(seconds: float, fn, *args):
    """`fn(*args)` in a thread, failing the test if it does not return (or raise) within `seconds`: a FIFO must
    be refused, never hang the suite (a reader stuck on one is released by opening its write end)."""
    outcome: list = []

    def run():
        try:
            outcome.append(("ok", fn(*args)))
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread as is
            outcome.append(("raised", exc))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if not outcome:
        for arg in args:
            if os.path.exists(str(arg)) and stat.S_ISFIFO(os.stat(str(arg)).st_mode):
                os.close(os.open(str(arg), os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail(f"{getattr(fn, '__name__', fn)} still running after {seconds} s")
    kind, value = outcome[0]
    if kind == "raised":
        raise value
    return value
