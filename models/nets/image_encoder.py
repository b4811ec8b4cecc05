"""The trainable image tower: a torchvision ResNet trunk whose pooled features feed the projection head.

ImageNet weights are the default (`ResNet50_Weights.IMAGENET1K_V2`). Offline without them cached, construction
fails within seconds with a one-line message instead of hanging on the download.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from shardgen.format.storage import reachable

from ..errors import UserError, WeightsUnavailable

ARCHS = {"resnet50": ("resnet50", "ResNet50_Weights", "IMAGENET1K_V2", 2048),
         "resnet18": ("resnet18", "ResNet18_Weights", "IMAGENET1K_V1", 512)}  # resnet18: CPU smoke runs/tests


def _imagenet_weights(arch: str):
    import torchvision.models as tvm

    _, weights_cls, weights_name, _ = ARCHS[arch]
    weights = getattr(getattr(tvm, weights_cls), weights_name)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
    if not cached.is_file() and not reachable(weights.url):
        raise WeightsUnavailable(
            f"{arch} ImageNet weights are not cached ({cached}) and {weights.url.split('/')[2]} is unreachable: "
            "run once online, copy the file there, pass --weights PATH (a state dict), or --no-pretrained")
    return weights


def _local_weights(path: str) -> dict:
    """A trunk state dict from a local file (plain or under "state_dict"), loaded without unpickling code."""
    from .weights import load_plain

    if not Path(path).is_file():
        raise UserError(f"--weights {path}: no such file")
    state = load_plain(Path(path), what="weights file")
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise UserError(f"--weights {path}: holds a {type(state).__name__}, not a state dict")
    return state


class ImageEncoder(nn.Module):
    """ResNet trunk → pooled features `[B, out_dim]` (2048 for resnet50)."""

    def __init__(self, arch: str = "resnet50", *, pretrained: bool = True, weights_path: str | None = None) -> None:
        super().__init__()
        import torchvision.models as tvm

        if arch not in ARCHS:
            raise ValueError(f"arch must be one of {list(ARCHS)}, got {arch!r}")
        name, _, _, out_dim = ARCHS[arch]
        weights = _imagenet_weights(arch) if pretrained and weights_path is None else None
        trunk = getattr(tvm, name)(weights=weights)
        if weights_path is not None:
            state = _local_weights(weights_path)
            try:
                trunk.load_state_dict(state)
            except RuntimeError as exc:  # missing/unexpected keys, shape mismatches
                raise UserError(f"--weights {weights_path}: does not fit {arch} "
                                f"({str(exc).splitlines()[0]})") from exc
        trunk.fc = nn.Identity()
        self.trunk, self.arch, self.out_dim = trunk, arch, out_dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.trunk(images)  # [B, out_dim]
