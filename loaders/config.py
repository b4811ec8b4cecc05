"""`LoaderConfig`: every option of `make_loader`, with its default and its check, in one place."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .shape.augment import AUGMENTATIONS
from .shape.decode import available_backends

CAPTION_MODES = ("random", "first", "all")


@dataclass(frozen=True)
class LoaderConfig:
    batch_size: int
    num_workers: int = 0
    decode_threads: int | None = None  # default: cores / max(1, num_workers)
    shuffle: bool = True
    seed: int = 0
    caption: str = "random"
    image_size: int | None = None  # output size in pixels; default: the manifest's image size
    crop: str = "center"  # or "random" (training augmentation, on uint8: loaders.shape.augment)
    flip: bool = False  # random horizontal flip (training augmentation)
    augmentations: tuple[str, ...] = ()  # further augmentations by name (loaders.shape.augment.AUGMENTATIONS), in order
    shuffle_buffer: int = 1000
    drop_last: bool = False
    resampled: bool = False
    rank: int | None = None
    world_size: int | None = None
    on_error: str = "raise"
    decode: str = "cpu"  # "gpu": ship raw JPEG bytes, decode on the device (see loaders.handover.device)
    backend: str = "auto"
    pin_memory: bool | None = None
    prefetch_factor: int = 2
    persistent_workers: bool = True  # keep worker processes between epochs
    gil_switch_interval: float | None = 2e-4  # while iterating with decode threads; None = leave Python's default
    embed_dim: int | None = None  # the text embeddings' width; None: the manifest's (512 without one)
    weights: tuple[float, ...] | None = None  # several sources: each one's share of an epoch (loaders.plan.mixing)
    epoch_samples: int | None = None  # samples per mixed epoch; default: every source's samples together
    retries: int = 3  # remote shards: reopen and continue after transient errors
    retry_backoff: float = 0.5
    storage_options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
        if self.caption not in CAPTION_MODES:
            raise ValueError(f"caption must be one of {CAPTION_MODES}, got {self.caption!r}")
        if self.image_size is not None and (type(self.image_size) is not int or self.image_size < 1):
            raise ValueError(f"image_size must be a whole number of pixels >= 1 (None: the shards' size), got "
                             f"{self.image_size!r}")
        if self.crop not in ("center", "random"):
            raise ValueError(f"crop must be 'center' or 'random', got {self.crop!r}")
        if isinstance(self.augmentations, str) or not all(a in AUGMENTATIONS for a in self.augmentations):
            raise ValueError(f"augmentations must be names from {sorted(AUGMENTATIONS)}, got {self.augmentations!r}")
        object.__setattr__(self, "augmentations", tuple(self.augmentations))
        if self.on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {self.on_error!r}")
        if self.decode not in ("cpu", "gpu"):
            raise ValueError(f"decode must be 'cpu' or 'gpu', got {self.decode!r}")
        if self.decode == "gpu" and self.on_error == "skip":  # crop, flip and image_size the device path honours
            raise ValueError("on_error='skip' needs decode='cpu': with decode='gpu' JPEGs are decoded after the "
                             "batch left the loader, where an undecodable one cannot be replaced")
        if self.backend not in ("auto", *available_backends()):
            raise ValueError(f"backend must be 'auto' or one of {available_backends()}, got {self.backend!r}")
        if self.shuffle_buffer < 0:
            raise ValueError(f"shuffle_buffer must be >= 0, got {self.shuffle_buffer}")
        if self.embed_dim is not None and (type(self.embed_dim) is not int or self.embed_dim < 1):
            raise ValueError(f"embed_dim must be a whole number >= 1 (None: the manifest's), got {self.embed_dim!r}")
        if self.weights is not None:
            object.__setattr__(self, "weights", tuple(self.weights))  # a list from a command line or JSON
            if not self.weights or not all(isinstance(w, (int, float)) and not isinstance(w, bool)
                                           and math.isfinite(w) and w >= 0 for w in self.weights) \
                    or not sum(self.weights) > 0:
                raise ValueError(f"weights must be numbers >= 0, not all 0, got {list(self.weights)}")
        if self.epoch_samples is not None and (type(self.epoch_samples) is not int or self.epoch_samples < 1):
            raise ValueError(f"epoch_samples must be a whole number >= 1, got {self.epoch_samples!r}")
        if self.resampled and (self.weights is not None or self.epoch_samples is not None):
            raise ValueError("resampled=True does not combine with weights or epoch_samples: a mixed epoch draws "
                             "its quota from each source, cycling a short one")

    @property
    def workers(self) -> int:
        """Producers of an epoch's batches: the worker processes, or the main process alone."""
        return max(1, self.num_workers)

    def rank_world(self) -> tuple[int, int]:
        """(rank, world size): as configured, else from torch.distributed when initialized, else (0, 1)."""
        if self.rank is not None or self.world_size is not None:
            rank, world = self.rank or 0, self.world_size or 1
        elif torch.distributed.is_available() and torch.distributed.is_initialized():
            rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        else:
            rank, world = 0, 1
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not in [0, world_size={world})")
        return rank, world
