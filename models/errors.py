"""models' exceptions, following the project's error policy (written in `shardgen.format.errors`).

`UserError` is bad user input (a path, option, checkpoint or environment we cannot use): the command lines print its
message as one line and exit 2. It mirrors `shardgen.format.errors.UserError` rather than deriving from it because
model code imports nothing of ours; `models.train` and `models.evaluate` catch both. Bad *data* in shards arrives as
the loader's `LoaderError`; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input or environment for training or evaluation; the message says what to do."""


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


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM, SIGUSR1: `signum`) during training, after the checkpoint at `step` was written
    (`checkpoint` is None on ranks > 0)."""

    def __init__(self, step: int, checkpoint: str | None, signum: int = 2) -> None:
        super().__init__(f"interrupted at step {step}")
        self.step, self.checkpoint, self.signum = step, checkpoint, signum


__all__ = ["CheckpointError", "ShardSourceError", "TrainingInterrupted", "UnsafeCheckpoint", "UserError",
           "WeightsUnavailable"]
