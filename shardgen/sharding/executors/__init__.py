"""Where the build's tasks run: the `Executor` contract and the executors, one module each.

A task is a plain function and its arguments, a pure function of them (so a retried task returns the same result):
a shard task (`sharding.shardtask`) or a chunk of captions to encode (`text.cache`). An executor runs tasks and hands
back `concurrent.futures`-style results; `capacity` says how many it runs at once (the driver keeps about twice that
many submitted), `gpus` how many GPUs a task may ask for. A task's exception comes back as itself.

Adding an executor (Dask, Spark, a job queue) is one module in this folder defining `NAME` and
`start(*, workers, address, progress)`, a context manager yielding an `Executor`: the folder is the registry
(`names()`), and the CLI reads its choices from it.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Resources:
    """What one task asks for: CPUs and GPUs (an executor without GPUs runs `gpus` tasks on its CPUs)."""

    cpus: float = 1
    gpus: float = 0


CPU_TASK = Resources()


class TaskLost(Exception):
    """A task's process or node died under it (the OOM killer, a lost node) and the executor gave up on it: what
    `result()` raises then, whatever the executor, with the executor's own error as its cause."""


class Future(Protocol):
    def result(self) -> Any: ...


class Executor(Protocol):
    """Runs tasks: `submit(fn, *args, resources=...)` returns a future whose `result()` is `fn(*args)` or raises
    what `fn` raised."""

    name: str
    capacity: int  # tasks it runs at once
    gpus: int  # GPUs a task may use (0: none)
    runs_here: bool  # tasks run on this machine (then caption encoding stays in the build process)

    def submit(self, fn: Callable, /, *args: Any, resources: Resources = CPU_TASK) -> Future: ...

    def each_node(self, fn: Callable, /, *args: Any) -> list[Future]:
        """`fn(*args)` once on every node (the cluster check); once here for executors on this machine."""


def names() -> tuple[str, ...]:
    """The executors in this folder, by their `NAME` (module names, without importing what they run on)."""
    return tuple(sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")))


def open_executor(name: str, *, workers: int, address: str | None = None,
                  progress: bool = False) -> AbstractContextManager[Executor]:
    """The executor `name` (one of `names()`), as a context manager that shuts it down after the build."""
    if name not in names():
        from ...errors import UserError

        raise UserError(f"--executor {name}: not an executor here; choose one of {', '.join(names())}")
    module = importlib.import_module(f"{__name__}.{name}")
    return module.start(workers=workers, address=address, progress=progress)


__all__ = ["CPU_TASK", "Executor", "Future", "Resources", "TaskLost", "names", "open_executor"]
