"""models: ResNet image tower + projection head trained against frozen CLIP text embeddings; loss and metrics.

Folders: `nets/` (the model library), `training/` (steps, checkpoints, stop signals), `runs/` (what the
commands check, print and write). Knows nothing about tar files: only `models.train`, `models.evaluate` and
`runs/` join it with `loaders`. The frozen text tower lives in `shardgen.text.encoder` (the builder encodes
captions with it); `models.TextEncoder` is the same class, imported on first use.
"""

from .nets.clip import CLIPModel, parameter_counts
from .runs.curves import read_curves, write_curves
from .errors import CheckpointError, UserError, WeightsUnavailable
from .nets.head import ProjectionHead
from .nets.image_encoder import ImageEncoder
from .nets.loss import info_nce_loss
from .nets.metrics import recall_at_k
from .training.distributed import auto_device

_TEXT = ("DEFAULT_TEXT_ENCODER", "EncoderLoadError", "TextEncoder")


def __getattr__(name: str):
    if name in _TEXT:
        import shardgen.text.encoder

        return getattr(shardgen.text.encoder, name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")


__all__ = [
    "DEFAULT_TEXT_ENCODER", "CLIPModel", "CheckpointError", "EncoderLoadError", "ImageEncoder", "ProjectionHead",
    "TextEncoder", "UserError", "WeightsUnavailable", "auto_device", "info_nce_loss", "parameter_counts",
    "read_curves", "recall_at_k", "write_curves",
]
