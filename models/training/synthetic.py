"""Synthetic input (`--synthetic`): batches shaped like the loader's, made once on the device and served again and
again, so the training loop runs at the step rate of the model alone, the ceiling a loader is measured against.

Like open_clip's synthetic dataset, but on the device: nothing is decoded, copied or collated per step. The images
are random uint8 in the loader's layout (`[B, 3, S, S]` viewing `[B, S, S, 3]` memory), normalized on the device by
the same `DeviceLoader` as real batches; the text embeddings are random unit vectors.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

POOL = 2  # distinct batches served in turn: enough that a step never sees the batch it just trained on


class SyntheticLoader:
    """Stands in for `loaders.ShardLoader` (`len`, `samples_per_epoch`, `set_epoch`, `batches_in_pass`, iteration,
    `close`). `skip`: batches of the first pass already trained on (a resumed run)."""

    def __init__(self, *, batch_size: int, image_size: int, embed_dim: int, steps_per_epoch: int,
                 device: torch.device, seed: int = 0, skip: int = 0, positions=None) -> None:
        gen = torch.Generator(device=device).manual_seed(seed)
        self.batches = []
        for k in range(POOL):
            nhwc = torch.randint(0, 256, (batch_size, image_size, image_size, 3), dtype=torch.uint8, device=device,
                                 generator=gen)
            text = torch.randn(batch_size, embed_dim, device=device, generator=gen)
            self.batches.append({
                "image": nhwc.permute(0, 3, 1, 2),  # [B, 3, S, S] uint8, as the loader's
                "text_embedding": torch.nn.functional.normalize(text, dim=-1),  # [B, D] float32
                "image_id": torch.arange(k * batch_size, (k + 1) * batch_size, device=device),  # [B]
            })
        self.steps_per_epoch, self.batch_size = steps_per_epoch, batch_size
        self.skip, self.handed = skip, 0
        self.positions = positions  # the shard loader whose state dicts checkpoints hold (never iterated)

    def __len__(self) -> int:
        return self.steps_per_epoch

    @property
    def samples_per_epoch(self) -> int:
        return self.steps_per_epoch * self.batch_size

    @property
    def batches_in_pass(self) -> int:
        """Batches the next iteration yields."""
        return self.steps_per_epoch - self.skip

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        self.skip, self.handed = skip_batches, 0
        if self.positions is not None:  # never iterated: only its bookkeeping
            self.positions.set_epoch(epoch, skip_batches)

    def state_dict(self, *, batches: int | None = None) -> dict:
        """The position as the shard loader states it (on top of a resumed epoch's history), so a synthetic run's
        checkpoint resumes like any other."""
        return self.positions.state_after(self.handed if batches is None else batches)

    def close(self) -> None:
        pass

    def __iter__(self) -> Iterator[dict]:
        self.handed = 0
        for i in range(self.skip, self.steps_per_epoch):
            self.handed += 1
            yield self.batches[i % POOL]
        self.skip = 0  # iterating again without set_epoch: a whole pass, as the shard loader's next epoch
