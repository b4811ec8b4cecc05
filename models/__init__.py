"""models: ResNet image tower + projection head trained against frozen CLIP text embeddings; loss and metrics.

Knows nothing about tar files: only `models.train` and `models.evaluate` join it with `loaders`.
"""

from .clip import CLIPModel, parameter_counts
from .head import ProjectionHead
from .image_encoder import ImageEncoder, WeightsUnavailable
from .loss import info_nce_loss
from .metrics import recall_at_k
from .text import DEFAULT_TEXT_ENCODER, EncoderLoadError, TextEncoder

__all__ = [
    "CLIPModel", "DEFAULT_TEXT_ENCODER", "EncoderLoadError", "ImageEncoder", "ProjectionHead", "TextEncoder",
    "WeightsUnavailable", "info_nce_loss", "parameter_counts", "recall_at_k",
]
