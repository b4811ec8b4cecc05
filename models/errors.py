"""models' exceptions, members of the one error family written in `shardgen.format.errors`.

`UserError` is that module's class (the format layer is the one part of ours model code may import): bad user input
(a path, option, checkpoint or environment we cannot use), one line and exit 2 from the command lines. Bad *data* in
shards arrives as the loader's `LoaderError` or the format's `FormatError`, both `DataError`s; anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

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


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training, after the checkpoint at `step` was written (`checkpoint` is None on ranks > 0); the
    message says where the checkpoint is and how to continue (`resume`: the run folder for `--resume`)."""

    def __init__(self, step: int, checkpoint: str | None, resume: str | None = None) -> None:
        where = f"; checkpoint {checkpoint}; resume with --resume {resume or checkpoint}" if checkpoint else ""
        super().__init__(f"interrupted at step {step}{where}")
        self.step, self.checkpoint = step, checkpoint


__all__ = ["CheckpointError", "ShardSourceError", "TrainingInterrupted", "UnsafeCheckpoint", "UserError",
           "WeightsUnavailable"]
