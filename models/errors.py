"""models' exceptions, members of the one error family written in `shardgen.format.errors`.

`UserError` is that module's class (the format layer is the one part of ours model code may import): bad user input
(a path, option, checkpoint or environment we cannot use), one line and exit 2 from the command lines. Bad *data* in
shards arrives as the loader's `LoaderError` or the format's `FormatError`, both `DataError`s; anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

import signal

from shardgen.format.errors import UserError


class WeightsUnavailable(UserError, RuntimeError):
    """ImageNet weights are neither cached nor downloadable; the message says how to proceed."""


class CheckpointError(UserError):
    """A checkpoint that is missing, unreadable, unsafe (pickled code) or incompatible with this run; the message
    names the file."""


class UnsafeCheckpoint(CheckpointError):
    """A checkpoint whose pickle holds objects other than tensors and plain data (it could run code): refused."""


class ShardSourceError(UserError):
    """A `--train-shards` / `--val-shards` / `--shards` source the loader cannot use (missing manifest, too few
    shards for the workers, a bad option)."""


class ProcessGroupLost(UserError):
    """A run of several ranks lost one (it died, or its connection broke) before they agreed to stop; the message
    names the last checkpoint, which is kept."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM, SIGUSR1: `signum`) during training, after the checkpoint at `step` was written
    (`checkpoint` is None on ranks > 0); the message says where the checkpoint is and how to continue (`resume`:
    the run folder for `--resume`); the exit code is 128 + `signum`."""

    def __init__(self, step: int, checkpoint: str | None, resume: str | None = None, signum: int = 2) -> None:
        where = f"; checkpoint {checkpoint}; resume with --resume {resume or checkpoint}" if checkpoint else ""
        how = "interrupted" if signum == 2 else f"stopped by {signal.Signals(signum).name}"  # 2: SIGINT
        super().__init__(f"{how} at step {step}{where}")
        self.step, self.checkpoint, self.signum = step, checkpoint, signum


__all__ = ["CheckpointError", "ProcessGroupLost", "ShardSourceError", "TrainingInterrupted", "UnsafeCheckpoint", "UserError",
           "WeightsUnavailable"]
