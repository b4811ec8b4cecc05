"""What a run checks before its first step, besides the train shards (`models.runs.data.open_loader`): the output
folder can be written and, without --resume, holds no other run (errors), and whether training reads evaluation
data (warnings: one line each, the run goes on). The val shards are opened in `models.runs.data.check_val_shards`,
so a run that would fail in its end-of-run evaluation fails in its first seconds instead, naming `--val-shards`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from shardgen.format import Manifest

from ..errors import UserError
from ..training.checkpoint import LATEST, step_files

_HELD_OUT = re.compile(r"(^|[_-])(val|test|validation|minival)(\d*)($|[_-])", re.IGNORECASE)


def check_out_writable(out: Path) -> None:
    """`--out` is a folder this process can create (nothing is created here: a run that stops before its first step
    leaves nothing behind) or write into. Raises UserError naming the flag."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file, not a folder; choose another --out")
    existing = next(p for p in (out, *out.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise UserError(f"--out {out}: {existing} is a file, not a folder; choose another --out")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"--out {out}: {existing} is not writable by this user; choose another --out")


def _canonical(url: str) -> str:
    return url if "://" in url else os.path.realpath(url)


def shared_shards(a: list[str], b: list[str]) -> int:
    """How many shard files of `b` are also in `a` (local paths compared after resolving links and `..`)."""
    seen = {_canonical(u) for u in a}
    return sum(_canonical(u) in seen for u in b)


def held_out_split(manifest: Manifest | None) -> str | None:
    """The manifest's split (or its source's, e.g. a Karpathy split) when it names evaluation data: val or test."""
    if manifest is None:
        return None
    for split in (manifest.split, (manifest.source or {}).get("split")):
        if isinstance(split, str) and _HELD_OUT.search(split):
            return split
    return None


def data_warnings(*, train_urls: list[str], train_manifest: Manifest | None, val_urls: list[str]) -> list[str]:
    """One line per sign that training reads evaluation data: the same shard files in --train-shards and
    --val-shards, or train shards whose manifest says they are a val or test split."""
    found = []
    shared = shared_shards(train_urls, val_urls)
    if shared:
        found.append(f"{shared} of the {len(val_urls)} --val-shards files are --train-shards files: the evaluation "
                     "measures memory, not retrieval")
    split = held_out_split(train_manifest)
    if split:
        found.append(f"--train-shards holds split {split!r} by its manifest: training on evaluation data makes "
                     "its Recall@K meaningless")
    return found


def own_training_warning(*, eval_urls: list[str], train_urls: list[str], train_shards: str) -> str | None:
    """A line when a checkpoint is evaluated on shards it was trained on (`train_shards`, as its run gave them)."""
    shared = shared_shards(train_urls, eval_urls)
    if not shared:
        return None
    return (f"{shared} of the {len(eval_urls)} --shards files are this checkpoint's own training shards "
            f"({train_shards}): Recall@K here measures memory, not retrieval")


def mix_line(loader) -> str:
    """What each source gives an epoch: `sources: A 36 (75 %), B 12 (25 %) of 48 samples per epoch`."""
    shards = loader.shards
    n = shards.n_samples
    takes = shards.quotas or tuple(p.n_samples for p in shards.parts)
    parts = ", ".join(f"{name} {take} ({take / max(n, 1):.0%})" for name, take in zip(shards.names, takes))
    how = "mixed" if shards.quotas else "concatenated"
    return f"sources ({how}; batch['source'] indexes them): {parts} of {n} samples per epoch"


def check_out_folder(out: Path, *, fresh: bool) -> None:
    """`--out` can be written, and without --resume holds no other run (both before the first step)."""
    if fresh:
        check_fresh_out(out)
    check_out_writable(out)


def check_fresh_out(out: Path) -> None:
    """A run without --resume must not mix its checkpoints and metrics into another run's folder."""
    if out.is_dir() and ((out / LATEST).is_file() or step_files(out)):
        raise UserError(f"--out {out} already holds a run's checkpoints: pass --resume {out} to continue it, "
                        "or choose another --out")
