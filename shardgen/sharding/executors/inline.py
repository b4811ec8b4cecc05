"""`--executor inline`: every task runs in the build's own process, one after another (tests, debugging, a
profiler that should see everything)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from . import CPU_TASK, Resources

NAME = "inline"


class InlineExecutor:
    name = NAME
    capacity = 1
    gpus = 0
    runs_here = True

    def submit(self, fn: Callable, /, *args: Any, resources: Resources = CPU_TASK) -> _Deferred:
        """`fn(*args)`, run when its result is asked for: tasks run in the order the driver takes their results,
        so everything before an interrupt is journaled."""
        return _Deferred(fn, args)

    def each_node(self, fn: Callable, /, *args: Any) -> list:
        return [self.submit(fn, *args)]


class _Deferred:
    def __init__(self, fn: Callable, args: tuple) -> None:
        self._call: tuple[Callable, tuple] | None = (fn, args)
        self._value: Any = None

    def result(self) -> Any:
        if self._call is not None:
            fn, args = self._call
            self._value = fn(*args)  # an exception goes to the caller as it is, like a future's
            self._call = None
        return self._value


@contextmanager
def start(*, workers: int, address: str | None = None, progress: bool = False) -> Iterator[InlineExecutor]:
    if address is not None:
        raise ValueError("ray_address needs --executor ray")
    yield InlineExecutor()
