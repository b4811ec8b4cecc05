"""Tensors read from a file without running code: `load_plain`, the one `torch.load` of the models, for a
trunk's `--weights` file (`image_encoder`) and for checkpoints (`models.training.checkpoint`). A file whose pickle
would call something is refused."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from ..errors import CheckpointError, UnsafeCheckpoint


def load_plain(path: Path, *, what: str = "checkpoint") -> object:
    """`torch.load` that unpickles tensors and plain containers only. Raises CheckpointError naming the file."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # the safe unpickler met something other than tensors and plain data
        reason = str(exc).split("WeightsUnpickler error: ")[-1].strip().split(". ")[0].splitlines()[0]
        raise UnsafeCheckpoint(f"{path}: refused to load this {what}: it holds more than tensors and plain data "
                               f"(code to run, or damage: {reason})") from exc
    except (RuntimeError, EOFError, KeyError, ValueError, OSError) as exc:  # torch's zip reader, a short pickle
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable {what} (truncated or corrupt: {detail})") from exc
