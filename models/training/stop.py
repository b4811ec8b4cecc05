"""How training stops on a signal: Ctrl-C, SIGTERM (how SLURM, Kubernetes and cloud preemption stop a job) and
SIGUSR1 (what SLURM sends ahead of the kill with `--signal=USR1@60`) all end in a checkpoint at the current step and
one line.

One process: the first stop signal raises `StopRequested` where the program is (a wait for data ends at once),
except inside `interrupts_deferred` (a step, its log record and its checkpoint), where it is raised when the block
ends. Signals after the first are the same request (a wrapper that forwards TERM to its process group sends it
twice): they are noted and ignored, so the checkpoint that the first one asked for is written and the last line
says so.

Several processes (torchrun): a signal only records the request (`record_only`), since a rank that stopped on its
own would leave the others inside a collective. After every step the ranks agree through the process group
(`distributed.StopVote`), so every rank stops after the same step and rank 0 writes the checkpoint (`stopped`). A
rank that dies before they agree breaks the group: `group_broke` says so in one line and keeps the last checkpoint.
"""

from __future__ import annotations

import re
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .checkpoint import LATEST, CheckpointWriter, Position
from .distributed import DistEnv
from ..errors import ProcessGroupLost, TrainingInterrupted

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGUSR1") if hasattr(signal, name))


class StopRequested(KeyboardInterrupt):
    """A stop signal arrived (`signum`); a KeyboardInterrupt, so SIGTERM and SIGUSR1 take Ctrl-C's path."""

    def __init__(self, signum: int) -> None:  # SIGINT keeps Ctrl-C's own message (`errors.report`'s default)
        super().__init__("" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}; nothing was "
                         "saved since the last checkpoint")
        self.signum = signum


class _Request:
    """This process's stop request: the first stop signal's number (None: none yet); inside `stop_signals`
    (`active`), and whether signals only record it (`record_only`: several ranks)."""

    signum: int | None = None
    active: bool = False
    record_only: bool = False


_REQUEST = _Request()


def stop_requested() -> int:
    """The signal number this process was asked to stop by (0: none)."""
    return _REQUEST.signum or 0


def _note(signum: int) -> bool:
    """Record `signum`; True when it is the first request."""
    if _REQUEST.signum is not None:
        return False
    _REQUEST.signum = signum
    return True


def _stop(signum: int, frame) -> None:
    if _note(signum) and not _REQUEST.record_only:
        raise StopRequested(signum)


def _install(handler) -> dict:
    """`handler` for every stop signal; returns the handlers it replaced."""
    return {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}


def _restore(previous: dict) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


@contextmanager
def stop_signals(*, record_only: bool = False) -> Iterator[None]:
    """Inside the block every stop signal raises `StopRequested` (SIGTERM would otherwise kill the process with no
    checkpoint), or with `record_only` is recorded for `stop_requested`; the one handler for the three signals.
    Only the main thread can install handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _REQUEST.signum, _REQUEST.active, _REQUEST.record_only = None, True, record_only
    previous = _install(_stop)
    try:
        yield
    finally:
        _restore(previous)
        _REQUEST.signum, _REQUEST.active, _REQUEST.record_only = None, False, False


@contextmanager
def interrupts_deferred() -> Iterator[None]:
    """A stop signal inside the block is raised (as `StopRequested`) when the block ends, so a checkpoint never
    holds half an optimizer step; not when a stop is already under way (the block that writes its checkpoint) or
    only recorded (several ranks: the loop raises it once they agree)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    first = _REQUEST.signum is None
    previous = _install(lambda signum, frame: _note(signum))
    try:
        yield
    finally:
        _restore(previous)
    if first and _REQUEST.signum is not None and not _REQUEST.record_only:
        signum = _REQUEST.signum
        if not _REQUEST.active:  # outside `stop_signals` nobody resets the request
            _REQUEST.signum = None
        raise StopRequested(signum)


def stopped(exc: KeyboardInterrupt, pos: Position, writer: CheckpointWriter | None,
            save: Callable[[Position], Path | None], out: str) -> TrainingInterrupted:
    """After a stop signal: the checkpoint at the current step (rank 0; unless that step was just saved), and the
    line that names it. Signals arriving meanwhile are the same request: they cannot stop the save."""
    with interrupts_deferred():
        ckpt = Path(out) / LATEST if writer and writer.saved_step == pos.step else save(pos)
    return TrainingInterrupted(pos.step, str(ckpt) if ckpt else None, resume=out,
                               signum=getattr(exc, "signum", signal.SIGINT))


def group_broke(exc: RuntimeError, pos: Position, env: DistEnv, out: Path) -> ProcessGroupLost:
    """A collective failed because a rank is gone: one line, and where the last checkpoint is (it is kept)."""
    cause = re.sub(r"^\[[^\]]*\]\s*", "", str(exc).strip().splitlines()[0]).split(". ")[0]  # gloo: "[file:line] ..."
    if not env.is_main:
        kept = "rank 0 keeps the last checkpoint"
    elif (out / LATEST).is_file():
        kept = f"the last checkpoint, {out / LATEST}, is kept: resume with --resume {out}"
    else:
        kept = "no checkpoint was written yet"
    return ProcessGroupLost(f"the process group broke at step {pos.step} (rank {env.rank}: {cause}): another rank "
                            f"is gone; {kept}")
