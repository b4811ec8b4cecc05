"""Evaluation protocols (`models.evaluate --protocol`): which images Recall@K ranks (`all`, Karpathy's `5k` test
split, its five `1k` folds, `flickr30k-1k`), whether shards are the Karpathy test split published figures use,
and `score`: the Recall@K figures of a set's embeddings under a protocol, with chance levels and timing."""

from __future__ import annotations

import time
from typing import NamedTuple

from shardgen.format import Manifest

from ..errors import UserError
from ..nets.metrics import recall_at_k, recall_at_k_folds
from .report import chance_levels


class Protocol(NamedTuple):
    """Which images Recall@K ranks: the first `n_images` (None: all) in `n_folds` equal folds, averaged."""

    name: str
    n_images: int | None
    n_folds: int
    about: str
    dataset: str = "coco"  # the Karpathy split file's dataset whose test split published figures use


TEST_IMAGES = {"coco": 5000, "flickr30k": 1000}  # Karpathy's test splits
PROTOCOLS = {
    "all": Protocol("all", None, 1, "every image of the shards, all their captions"),
    "5k": Protocol("5k", 5000, 1, "the first 5000 images (Karpathy's test split), all their captions"),
    "1k": Protocol("1k", 5000, 5, "mean over 5 folds of 1000 images (Karpathy's test split, in order)"),
    "flickr30k-1k": Protocol("flickr30k-1k", 1000, 1, "Flickr30k's 1000-image test split (Karpathy's "
                             "dataset_flickr30k.json), all its 5000 captions", "flickr30k"),
}


def check_protocol(protocol: Protocol, have: int) -> int:
    """The number of images `protocol` ranks out of `have`; UserError when the shards hold too few."""
    if protocol.n_images is not None and protocol.n_images > have:
        raise UserError(f"--protocol {protocol.name} ranks the first {protocol.n_images} images, these shards hold "
                        f"{have}; build Karpathy's test split for it: {karpathy_build(protocol)}")
    return have if protocol.n_images is None else protocol.n_images


def karpathy_build(protocol: Protocol) -> str:
    """The build of the Karpathy test split `protocol` compares with published figures on."""
    if protocol.dataset == "coco":
        return "shardgen build --karpathy dataset_coco.json --split test"
    return (f"shardgen build --karpathy dataset_{protocol.dataset}.json --image-root {protocol.dataset}-images "
            "--split test")


def score(emb: dict, protocol: Protocol = PROTOCOLS["all"]) -> dict:
    """Recall@1/5/10 both ways under `protocol`, the images and captions ranked, chance level and the seconds the
    ranking took; `folds` holds each fold's figures when there are several."""
    n_images = check_protocol(protocol, int(emb["image"].shape[0]))
    t0 = time.perf_counter()
    if protocol.n_images is None:
        recall, folds = recall_at_k(emb["image"], emb["text"], emb["owner"]), []
    else:
        recall, folds = recall_at_k_folds(emb["image"], emb["text"], emb["owner"], n_images=n_images,
                                          n_folds=protocol.n_folds)
    seconds = time.perf_counter() - t0
    fold_images = n_images // protocol.n_folds
    n_captions = int((emb["owner"] < n_images).sum())
    return {"protocol": protocol.name, "protocol_about": protocol.about, **recall, "n_images": n_images,
            "n_captions": n_captions, "n_folds": protocol.n_folds, "fold_images": fold_images,
            **chance_levels(fold_images, n_captions // protocol.n_folds),
            "recall_seconds": round(seconds, 3), **({"folds": folds} if len(folds) > 1 else {})}


def is_karpathy_test(manifest: Manifest | None, n_images: int, protocol: Protocol | None = None) -> bool:
    """Whether the shards are a whole Karpathy test split, the set published figures use: COCO's 5000 images for
    5k and 1k, Flickr30k's 1000 for flickr30k-1k."""
    protocol = protocol or PROTOCOLS["5k"]
    source = manifest.source if manifest is not None else None
    dataset = "coco2014" if protocol.dataset == "coco" else protocol.dataset
    return bool(source and source.get("split_file") and source.get("split") == "test"
                and source.get("dataset") == dataset and n_images == TEST_IMAGES[protocol.dataset])
