"""Checkpoints: everything needed to continue a run exactly (model, optimizer, schedule, scaler, loader position).

Loading never runs code: files are read with `torch.load(weights_only=True)` (tensors and plain containers only), so
a checkpoint whose pickle would call something is refused. What `models.train` saves fits that: the config as a
plain dict, the RNG state as a tensor, the optimizer/scheduler/scaler state dicts.

Writing is atomic (a temporary file of its own, then rename: `shardgen.format.atomic`). A run folder holds
`step-XXXXXXXX.pt` every `--checkpoint-every` steps and at the end (the last `keep` of them are kept) and
`latest.pt`, a hard link to the newest one (a copy where links are not supported), so `latest.pt` is always a complete file and costs no extra disk. Resuming from a folder whose
`latest.pt` is unreadable falls back to the newest readable `step-*.pt`, with a warning.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from shardgen.format.atomic import link_atomic, save_torch_atomic
from shardgen.format.errors import USER_ERRNOS

from ..errors import CheckpointError, UnsafeCheckpoint
from ..nets.weights import load_plain

if TYPE_CHECKING:
    from ..config import TrainConfig

log = logging.getLogger(__name__)

LATEST = "latest.pt"
STEP_FILE = re.compile(r"step-(\d{8})\.pt")
REQUIRED = ("model", "config", "step")  # what evaluation needs; resuming needs TRAINING_KEYS too
TRAINING_KEYS = ("optimizer", "scheduler", "scaler", "loader", "rng")


def step_file_name(step: int) -> str:
    return f"step-{step:08d}.pt"


def read_checkpoint(path: Path) -> dict:
    """One checkpoint file, checked to be what `models.train` writes. Raises CheckpointError."""
    state = load_plain(path)
    if not isinstance(state, dict) or any(k not in state for k in REQUIRED):
        raise CheckpointError(f"{path}: not a models.train checkpoint (expected the keys {', '.join(REQUIRED)})")
    if not isinstance(state["config"], dict) or "arch" not in state["config"]:
        raise CheckpointError(f"{path}: not a models.train checkpoint (its config names no arch)")
    return state


HEAD_OUT = "head.2.weight"  # the projection head's last layer: [embed_dim, hidden]


def checkpoint_width(state: dict) -> int | None:
    """The width of the embeddings the checkpoint's model makes: recorded (`embed_dim`), else its head's output
    rows (checkpoints written before it was recorded), None when neither says."""
    recorded = state.get("embed_dim")
    if isinstance(recorded, int) and not isinstance(recorded, bool):
        return recorded
    weight = state["model"].get(HEAD_OUT) if isinstance(state["model"], dict) else None
    return int(weight.shape[0]) if isinstance(weight, torch.Tensor) and weight.dim() == 2 else None


def check_width(state: dict, path: Path, *, embed_dim: int, flag: str, shards: str) -> None:
    """The checkpoint's head makes `embed_dim`-wide embeddings, the width of the shards' text embeddings (given
    with `flag`). Raises CheckpointError (one line)."""
    width = checkpoint_width(state)
    if width is not None and width != embed_dim:
        raise CheckpointError(f"{path}: its projection head makes {width}-d embeddings; {flag} {shards} hold "
                              f"{embed_dim}-d text embeddings (another text tower): use shards built with the "
                              "checkpoint's text encoder")


def step_files(folder: Path) -> list[Path]:
    """The folder's `step-*.pt` files, newest step first."""
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := STEP_FILE.fullmatch(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def load_checkpoint(path: str | Path) -> tuple[dict, Path]:
    """(state, the file it came from) for a checkpoint file or a run folder (its `latest.pt`, or else its newest
    readable `step-*.pt`). Raises CheckpointError: no such checkpoint, unreadable, unsafe, not ours."""
    path = Path(path)
    if path.is_file():
        return read_checkpoint(path), path
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such checkpoint (give a checkpoint file or a training --out folder)")
    candidates = ([path / LATEST] if (path / LATEST).is_file() else []) + step_files(path)
    if not candidates:
        raise CheckpointError(f"{path}: no checkpoint in this folder (no {LATEST} or step-*.pt)")
    first_error = None
    for candidate in candidates:
        try:
            state = read_checkpoint(candidate)
        except UnsafeCheckpoint:  # a crafted file is a reason to stop, not to look further
            raise
        except CheckpointError as exc:
            first_error = first_error or exc
            continue
        if first_error is not None:
            log.warning("%s; using %s instead", first_error, candidate)
        return state, candidate
    raise first_error


@dataclass
class Position:
    """Where a run is: optimizer steps done, the epoch being read, and the batches of the loader's current pass
    over it used so far (the loader's state dict says where that pass began, in samples of all ranks)."""

    step: int = 0
    epoch: int = 0
    batches: int = 0

    def advance(self) -> None:
        """One optimizer step on one batch."""
        self.step += 1
        self.batches += 1

    def next_epoch(self) -> None:
        self.epoch, self.batches = self.epoch + 1, 0


def legacy_loader_state(state: dict, *, world_size: int, n_samples: int, n_shards: int, shuffle_buffer: int
                        ) -> dict:
    """The checkpoint's "loader" entry as a loader state dict (`loaders.ShardLoader.state_dict`). Checkpoints
    written before the loader had one hold (epoch, samples per rank, seed, world size, batch size, workers), or
    older still (epoch, batches_done) with the rest in the config; those runs read the same shards
    (`n_samples` in `n_shards`) with drop_last and the loader's default `shuffle_buffer`. Raises CheckpointError."""
    saved, config = state["loader"], state["config"]
    if isinstance(saved, dict) and "segments" in saved:
        return saved
    try:
        if "samples" in saved:
            samples, world = int(saved["samples"]), int(saved["world_size"])
            seed, batch, workers = int(saved["seed"]), int(saved["batch_size"]), int(saved["num_workers"])
        else:
            samples = int(saved["batches_done"]) * int(config["batch_size"])
            world, seed, batch, workers = (world_size, int(config["seed"]), int(config["batch_size"]),
                                           int(config["num_workers"]))
        epoch = int(saved["epoch"])
    except (KeyError, TypeError, ValueError, OverflowError) as exc:  # OverflowError: int(inf)
        raise CheckpointError(f"its loader position is unreadable ({type(exc).__name__}: {exc})") from None
    if samples and (config.get("random_crop") or config.get("crop") == "random" or config.get("flip")):
        # those loaders drew augmentations and the shuffle from one generator: their mid-epoch order cannot be
        # replayed by today's, whose shuffle has a generator of its own
        raise CheckpointError(f"it stops mid-epoch {epoch} of a run with random crops or flips, written before "
                              "the loader had a state dict; resume from a checkpoint at an epoch boundary")
    segment = {"world_size": world, "workers": max(1, workers), "batch_size": batch, "drop_last": True,
               "shuffle_buffer": shuffle_buffer, "samples": samples * world}
    return {"epoch": epoch, "seed": seed, "shuffle": True, "resampled": False, "n_samples": n_samples,
            "n_shards": n_shards, "segments": [segment]}


class CheckpointWriter:
    """Writes `step-XXXXXXXX.pt` + `latest.pt` into a run folder and keeps the newest `keep` step files."""

    def __init__(self, folder: Path, *, keep: int) -> None:
        self.folder, self.keep = folder, keep
        self.saved_step: int | None = None  # the step of the last save

    def save(self, state: dict, *, step: int) -> Path:
        """Write the state of `step`; returns the path of `latest.pt`."""
        self.folder.mkdir(parents=True, exist_ok=True)
        latest = self.folder / LATEST
        if self.keep == 0:
            _write_atomic(state, latest)
        else:
            step_path = _write_atomic(state, self.folder / step_file_name(step))
            link_atomic(step_path, latest)
        self._prune(step)
        self.saved_step = step
        return latest

    def _prune(self, step: int) -> None:
        """Keep the `keep` newest step files up to `step`. Files of later steps belong to a run this one replaced
        (it resumed from an earlier checkpoint) and are removed too."""
        files = step_files(self.folder)
        current = [p for p in files if int(STEP_FILE.fullmatch(p.name).group(1)) <= step]
        for old in set(files) - set(current[:self.keep]):
            old.unlink()


def _write_atomic(state: dict, path: Path) -> Path:
    """The caption cache's mechanism (`save_torch_atomic`): nothing temporary left behind, a full disk one line."""
    try:
        return save_torch_atomic(state, path)
    except OSError as exc:
        if exc.errno not in USER_ERRNOS:
            raise
        raise CheckpointError(f"{path}: cannot write the checkpoint ({os.strerror(exc.errno)}); free some space "
                              "(or fix the folder's permissions) and resume from the last checkpoint") from None


def save_checkpoint(path: Path, state: dict) -> Path:
    """Write one checkpoint file atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return _write_atomic(state, path)


def read_resume(cfg: TrainConfig) -> tuple[dict, Path]:
    """The `--resume` checkpoint, checked to fit this run, and its file. Raises CheckpointError."""
    state, path = load_checkpoint(cfg.resume)
    if state["config"]["arch"] != cfg.arch:
        raise CheckpointError(f"{path}: trained with --arch {state['config']['arch']}, this run asks for --arch "
                              f"{cfg.arch}: pass --arch {state['config']['arch']} to continue it")
    missing = [k for k in TRAINING_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"{path}: holds no {', '.join(missing)} state, so training cannot continue from it")
    return state, path
