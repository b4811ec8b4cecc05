"""The shards the two commands read, opened through `loaders.make_loader`: `models.train`'s loader
(`open_loader`), its epoch resumed from a checkpoint (`resume_loader`), the `--val-shards` checked before the
first step (`check_val_shards`) and the `--synthetic` stand-in of the shards' shape (`synthetic_like`);
`models.evaluate`'s whole shard set in order (`open_shards`). A loader's refusal becomes one line naming the
option the shards came from."""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import torch

from loaders import SourceError, StateError, make_loader
from loaders.plan.seeds import torch_seed
from shardgen.format import redact

from ..config import TrainConfig, layout_changes, shards_text
from ..errors import CheckpointError, ShardSourceError
from ..training.checkpoint import Position, check_width, legacy_loader_state
from ..training.distributed import DistEnv
from ..training.synthetic import SyntheticLoader
from .preflight import data_warnings


def open_loader(cfg: TrainConfig):
    # whole batches only (all ranks take the same steps; an epoch's length is fixed); --synthetic: the manifest only
    options = replace(cfg.loader, drop_last=True, num_workers=0 if cfg.synthetic else cfg.loader.num_workers)
    try:
        return make_loader(cfg.train_shards, **asdict(options))
    except SourceError as exc:  # no manifest, a bad schema, fewer shards than workers, sources that do not fit
        named = redact(shards_text(cfg.train_shards))  # the loader's message starts with the source too
        raise ShardSourceError(f"--train-shards {named}: {str(exc).removeprefix(f'{named}: ')}") from exc


def check_val_shards(cfg: TrainConfig, train_loader) -> list[str]:
    """Open `--val-shards` as the end-of-run evaluation will (this process alone, whatever the world size), so
    an unusable val set stops the run before its first step, naming the flag; returns warnings (one line each)
    when the run trains on evaluation data."""
    shards, val_urls = train_loader.shards, []
    for val in cfg.val_sets:  # each of the train shards' width
        loader = open_shards(val, batch_size=1, flag="--val-shards", embed_dim=train_loader.embed_dim)
        if len(loader) < 1:
            raise ShardSourceError(f"--val-shards {val}: holds no samples to evaluate on")
        val_urls += loader.shards.urls
    return list(dict.fromkeys(w for m in [p.manifest for p in shards.parts] or [shards.manifest]
                              for w in data_warnings(train_urls=shards.urls, train_manifest=m, val_urls=val_urls)))


def resume_loader(loader, state: dict, path: Path, env: DistEnv, *, named: str) -> tuple[Position, str]:
    """Put `loader` (of --train-shards `named`) where checkpoint `state` left its epoch (any world size, batch
    size, workers); returns the run's position and a line saying where it resumed and what changed. Raises
    CheckpointError, also for a checkpoint whose head is of another width than the shards' embeddings."""
    check_width(state, path, embed_dim=loader.embed_dim, flag="--train-shards", shards=named)
    shards = loader.shards
    try:
        saved = legacy_loader_state(state, world_size=env.world, n_samples=shards.n_samples,
                                    n_shards=len(shards.urls), shuffle_buffer=loader.cfg.shuffle_buffer)
        loader.load_state_dict(saved)
    except StateError as exc:  # the loader's checks: other shards, another seed mid-epoch, a malformed entry
        raise CheckpointError(f"{path}: cannot continue its epoch: {exc}") from None
    step = int(state["step"])
    line = f"resumed from step {step} (epoch {saved['epoch']}, sample {saved['samples']}) of {path}"
    if loader.epoch != saved["epoch"]:
        line += f"; epoch {saved['epoch']} was complete"
    else:
        changed = layout_changes(saved["segments"][-1], world=env.world, batch_size=loader.cfg.batch_size,
                                 workers=loader.cfg.workers)
        if changed:
            line += (f"; changed: {', '.join(changed)}: the epoch's {loader.batches_in_pass} remaining batches hold "
                     "exactly the samples not seen yet")
    return Position(step=step, epoch=loader.epoch), line


def synthetic_like(loader, cfg: TrainConfig, device: torch.device) -> SyntheticLoader:
    """`--synthetic`: device-made batches of the shards' image size and epoch length (the shards are not read)."""
    return SyntheticLoader(batch_size=cfg.batch_size, image_size=loader.image_size,
                           embed_dim=loader.cfg.embed_dim, steps_per_epoch=len(loader), device=device,
                           seed=torch_seed("synthetic", cfg.seed),
                           skip=len(loader) - loader.batches_in_pass, positions=loader)


def open_shards(shards: str, *, batch_size: int, flag: str = "--shards", embed_dim: int | None = None):
    """The whole shard set in order, in this process alone (also under torchrun: rank 0 evaluates everything);
    `embed_dim`: the width its embeddings must have (None: any). Errors name `flag`, the option the user gave the
    shards with."""
    try:
        return make_loader(shards, batch_size=batch_size, shuffle=False, caption="all", num_workers=0, rank=0,
                           world_size=1, embed_dim=embed_dim)
    except SourceError as exc:  # no manifest, a bad schema
        raise ShardSourceError(f"{flag} {shards}: {str(exc).removeprefix(redact(shards) + ': ')}") from exc
