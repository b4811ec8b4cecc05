"""`--executor local` (the default): tasks on `workers` processes of this machine.

Processes die with the build: each asks the kernel (Linux `PR_SET_PDEATHSIG`) for SIGKILL when the build process
goes, so a build killed by the OOM killer or `kill -9` leaves no orphans behind. A process that dies under a task
(the OOM killer) breaks the pool: `BrokenProcessPool` comes back from that task's `result()`, which the build turns
into one line naming the shard.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Any

from . import CPU_TASK, Resources, TaskLost
from .inline import InlineExecutor

NAME = "local"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _die_with_parent(parent_pid: int) -> None:
    """Process initializer: SIGKILL this process when the build process dies (Linux; elsewhere a no-op)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent_pid:  # the parent died before the request above took effect
        os._exit(1)


class LocalExecutor:
    name = NAME
    gpus = 0  # caption encoding on a local GPU runs in the build process itself (`text.cache`)
    runs_here = True

    def __init__(self, pool: ProcessPoolExecutor, workers: int) -> None:
        self._pool = pool
        self.capacity = workers

    def submit(self, fn: Callable, /, *args: Any, resources: Resources = CPU_TASK) -> _LocalFuture:
        return _LocalFuture(self._pool.submit(fn, *args))

    def each_node(self, fn: Callable, /, *args: Any) -> list:
        return [self.submit(fn, *args)]


class _LocalFuture:
    def __init__(self, future: Future) -> None:
        self._future = future

    def result(self) -> Any:
        try:
            return self._future.result()
        except BrokenProcessPool as exc:
            raise TaskLost("an image process died: killed by the OOM killer or a signal") from exc


@contextmanager
def start(*, workers: int, address: str | None = None,
                  progress: bool = False) -> Iterator[LocalExecutor | InlineExecutor]:
    """`workers` processes; one worker runs the tasks in this process (no process to start or to die)."""
    if address is not None:
        raise ValueError("ray_address needs --executor ray")
    if workers <= 1:
        yield InlineExecutor()
        return
    with ProcessPoolExecutor(workers, initializer=_die_with_parent, initargs=(os.getpid(),)) as pool:
        yield LocalExecutor(pool, workers)
