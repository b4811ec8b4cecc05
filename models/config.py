"""`TrainConfig`, the one place training's settings and defaults live (the CLI reads them from here), and
`plan_run`, which resolves the run's length on the shards at hand.

How the training data is read (batch size, workers, decode threads, crop and flip, CPU or GPU decode, the seed of
shuffling and augmentation) is the loader's concern: `TrainConfig.loader` is a `loaders.LoaderConfig`, checked
there and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

from loaders.config import LoaderConfig

from .errors import ShardSourceError
from .nets.image_encoder import ARCHS
from .training.schedule import clipped_warmup

if TYPE_CHECKING:
    from .training.checkpoint import Position

PRECISIONS = ("auto", "bf16", "fp16", "fp32")


def default_loader() -> LoaderConfig:
    """Training's loader defaults: 128 samples per batch (per process), 4 worker processes, whole batches only."""
    return LoaderConfig(batch_size=128, num_workers=4, drop_last=True)


def as_sources(shards: str | list[str] | tuple[str, ...] | None) -> str | tuple[str, ...] | None:
    """One shard set as its string, several as a tuple (a list from a command line or a checkpoint's JSON)."""
    if shards is None or isinstance(shards, str):
        return shards
    shards = tuple(str(s) for s in shards)
    return shards[0] if len(shards) == 1 else shards


def shards_text(shards: str | tuple[str, ...] | None) -> str:
    """The shard sets as typed on a command line (for messages)."""
    return " ".join(shards) if isinstance(shards, tuple) else str(shards)


@dataclass(frozen=True)
class TrainConfig:
    train_shards: str | tuple[str, ...]  # several: mixed by loader.weights, else concatenated
    out: str
    val_shards: str | tuple[str, ...] | None = None  # several: one evaluation each
    # batch size, workers, decode threads, crop/flip, decode, seed; training always drops the last partial batch
    loader: LoaderConfig = field(default_factory=default_loader)
    epochs: int = 10
    lr_head: float = 1e-3
    lr_trunk: float = 1e-4
    weight_decay: float = 0.1
    warmup_steps: int = 500
    grad_clip: float = 1.0
    arch: str = "resnet50"
    pretrained: bool = True
    weights: str | None = None
    device: str = "auto"
    precision: str = "auto"  # auto: bf16 on GPUs with native bf16, else fp16 (+ loss scaling); fp32 on the CPU
    channels_last: bool = True
    compile: bool = False  # torch.compile the image tower
    synthetic: bool = False  # batches made once on the device: the step rate without data loading
    max_steps: int | None = None
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    log_every: int = 10
    resume: str | None = None
    progress: bool = True
    tensorboard: bool = False  # also log to OUT/tensorboard/ (needs the tensorboard package)

    def __post_init__(self) -> None:
        object.__setattr__(self, "train_shards", as_sources(self.train_shards))
        object.__setattr__(self, "val_shards", as_sources(self.val_shards) or None)
        if not isinstance(self.loader, LoaderConfig):
            raise TypeError(f"loader must be a loaders.LoaderConfig, got {type(self.loader).__name__}")
        for name in ("epochs", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "keep_checkpoints"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        for name in ("lr_head", "lr_trunk"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {self.precision!r}")
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {list(ARCHS)}, got {self.arch!r}")

    @property
    def val_sets(self) -> tuple[str, ...]:
        """The `--val-shards` sets, each evaluated on its own."""
        val = self.val_shards
        return () if not val else (val,) if isinstance(val, str) else val

    @property
    def batch_size(self) -> int:
        """Samples per step and process: the loader's batch size."""
        return self.loader.batch_size

    @property
    def seed(self) -> int:
        """The run's seed: model init here, shuffling and augmentation in the loader."""
        return self.loader.seed


class RunPlan(NamedTuple):
    """The run's length, resolved from the config and the shards."""

    total_steps: int
    warmup_steps: int
    steps_per_epoch: int
    samples_per_epoch: int  # this rank's
    limit: str  # which of --max-steps / --epochs decides total_steps, for the start line


def plan_run(cfg: TrainConfig, *, steps_per_epoch: int, samples_per_epoch: int) -> RunPlan:
    """`--max-steps` wins over `--epochs`: training continues across epochs until it is reached."""
    if steps_per_epoch < 1:
        raise ShardSourceError(f"--train-shards {shards_text(cfg.train_shards)}: fewer samples per process than one "
                               f"batch of --batch-size {cfg.batch_size}")
    if cfg.max_steps is not None:
        total = cfg.max_steps
        limit = f"--max-steps {total}, {total / steps_per_epoch:.1f} epochs of {steps_per_epoch} steps"
    else:
        total = cfg.epochs * steps_per_epoch
        limit = f"--epochs {cfg.epochs} × {steps_per_epoch} steps"
    return RunPlan(total, clipped_warmup(cfg.warmup_steps, total), steps_per_epoch, samples_per_epoch, limit)


def layout_changes(was: dict, *, world: int, batch_size: int, workers: int) -> list[str]:
    """What differs from the layout that read the checkpoint's epoch so far (`world size 2 → 1`, ...)."""
    now = {"world_size": world, "batch_size": batch_size, "workers": workers}
    names = {"world_size": "world size", "batch_size": "batch size", "workers": "loader workers"}
    return [f"{names[k]} {was[k]} → {now[k]}" for k in names if was[k] != now[k]]


def resumed_plan(plan: RunPlan, cfg: TrainConfig, pos: Position, loader) -> RunPlan:
    """With --epochs, the run ends after that many epochs whatever batch size or world size each part used:
    the steps done, the rest of the current epoch, and the epochs after it."""
    if cfg.max_steps is not None:
        return plan._replace(limit=f"--max-steps {cfg.max_steps}: {max(0, cfg.max_steps - pos.step)} steps from "
                                   f"step {pos.step}, {plan.steps_per_epoch} steps per epoch")
    epochs_after = max(0, cfg.epochs - pos.epoch - 1)
    left = loader.batches_in_pass + epochs_after * plan.steps_per_epoch
    total = pos.step + left if pos.epoch < cfg.epochs else pos.step
    rest = (f"--epochs {cfg.epochs}: {loader.batches_in_pass} steps to finish epoch {pos.epoch}, then "
            f"{epochs_after} × {plan.steps_per_epoch} steps; {total - pos.step} steps from step {pos.step}")
    return plan._replace(total_steps=total, limit=rest)
