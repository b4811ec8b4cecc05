"""`python -m models.evaluate`: Recall@K on a val shard set + qualitative plots.

Protocols (`--protocol`): `all` (default) ranks every image of the shards against all their captions; `5k` the
first 5000 images with all their captions and `1k` the mean over five folds of 1000 of them (images 0-999,
1000-1999, ... in shard order, i.e. COCO id order); `flickr30k-1k` Flickr30k's 1000-image test split with its 5000
captions (`shardgen build --karpathy dataset_flickr30k.json --image-root flickr30k-images --split test`).
Published COCO retrieval figures use Karpathy's 5k test split, so build it for them: `shardgen build --karpathy
dataset_coco.json --split test`. Recall@K is computed in chunks
(`metrics`), never holding the whole similarity matrix, and its time is reported.

Text embeddings come from the shards (the frozen tower's, precomputed); free-text queries are encoded on the fly
with the same frozen text encoder, the one the shards' manifest names unless `--text-encoder` is given. Results go
to `--out` (default: the checkpoint's folder) as `eval-<shards>-<hash>.json`, named by the shard set evaluated (its
folder name and a hash of its full path or URL), and so are the pictures (`image_to_text-<shards>-<hash>.png`, ...),
so evaluating other shards never overwrites a run's results or mixes its pictures.

Several sets in one command (`--shards coco_5k f30k_test --protocol 5k flickr30k-1k`, or one protocol for all):
each is evaluated as above (its JSON, its pictures), then one table gives a row per set. The checkpoint's head
must make embeddings of the width the shards' text embeddings have (the manifest's `embed_dim`), else one line.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from PIL import Image

from loaders import CLIP_MEAN, CLIP_STD, DeviceLoader, SourceError, resolve_source
from loaders.coco_dataset import clip_transform
from shardgen.config import config_from_options
from shardgen.format import EMBED_DIM, Manifest, is_remote, read_manifest, redact, write_text_atomic
from shardgen.format.errors import HANDLED, parser_exit_code, report

from .errors import CheckpointError, UserError
from .nets.clip import CLIPModel
from .nets.image_encoder import ImageEncoder
from .runs.curves import METRICS_NAME, write_curves
from .runs.data import open_shards
from .runs.preflight import own_training_warning
from .runs.protocols import PROTOCOLS, TEST_IMAGES, Protocol, check_protocol, is_karpathy_test, karpathy_build, score
from .runs.qualitative import qualitative
from .runs.report import format_sets_table, format_table, small_split_note
from .runs.results import results_path, shards_label
from .training.checkpoint import check_width, checkpoint_width, load_checkpoint
from .training.distributed import auto_device


@dataclass(frozen=True)
class EvalConfig:
    checkpoint: str  # a checkpoint file, or a training --out folder (its latest.pt)
    shards: str | tuple[str, ...]  # several: one evaluation each, one table
    device: str = "auto"
    batch_size: int = 64
    queries: tuple[str, ...] = ()
    text_encoder: str | None = None  # for queries; default: the one the manifest names
    show_images: int = 4
    unseen: str | None = None
    out: str | None = None  # default: the checkpoint's folder
    protocol: str | tuple[str, ...] = "all"  # one for every set, or one per set

    def __post_init__(self) -> None:
        for name in ("shards", "protocol"):
            value = getattr(self, name)
            if not isinstance(value, str):
                value = tuple(value)
                object.__setattr__(self, name, value[0] if len(value) == 1 else value)
        for protocol in self.protocols:
            if protocol not in PROTOCOLS:
                raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
        if len(self.protocols) not in (1, len(self.shard_sets)):
            raise ValueError(f"protocol: {len(self.protocols)} given for {len(self.shard_sets)} shard sets; give one "
                             "for all or one per set")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.show_images < 0:
            raise ValueError(f"show_images must be >= 0, got {self.show_images}")

    @property
    def shard_sets(self) -> tuple[str, ...]:
        return (self.shards,) if isinstance(self.shards, str) else self.shards

    @property
    def protocols(self) -> tuple[str, ...]:
        return (self.protocol,) if isinstance(self.protocol, str) else self.protocol

    def pairs(self) -> list[tuple[str, str]]:
        """(shards, protocol) for each set."""
        protocols = self.protocols * len(self.shard_sets) if len(self.protocols) == 1 else self.protocols
        return list(zip(self.shard_sets, protocols))


class LoadedModel(NamedTuple):
    model: CLIPModel
    path: Path  # the checkpoint file read
    step: int
    train_shards: str | list[str] | None = None  # as its training run was given them
    state: dict | None = None  # the checkpoint read


def load_model(checkpoint: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """The trained model of a checkpoint file or run folder, in eval mode. Raises CheckpointError."""
    state, path = load_checkpoint(checkpoint)
    width = checkpoint_width(state)
    model = CLIPModel(ImageEncoder(state["config"]["arch"], pretrained=False), embed_dim=width or EMBED_DIM)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: does not fit its own --arch {state['config']['arch']} "
                              f"({str(exc).splitlines()[0]})") from exc
    return LoadedModel(model.to(device).eval(), path, int(state["step"]), state["config"].get("train_shards"),
                       state)


@torch.no_grad()
def embed_shards(model: CLIPModel, shards: str, *, device: torch.device, batch_size: int = 64,
                 keep_thumbnails: int | None = 0, flag: str = "--shards") -> dict:
    """Image embeddings `[N, D]`, caption embeddings `[M, D]`, caption owners `[M]`, captions, and thumbnails
    of the first `keep_thumbnails` images (None: of every image, 128 × 128 px: ~2 GB for COCO val2014's 40k)."""
    loader = open_shards(shards, batch_size=batch_size, flag=flag)
    if loader.embed_dim != model.embed_dim:
        raise CheckpointError(f"the checkpoint's projection head makes {model.embed_dim}-d embeddings; {flag} "
                              f"{shards} hold {loader.embed_dim}-d text embeddings (another text tower): evaluate on "
                              "shards built with the checkpoint's text encoder")
    images, texts, owners, captions, thumbs = [], [], [], [], []
    n_images = 0
    for batch in DeviceLoader(loader, device):
        images.append(model(batch["image"]).float().cpu())  # [B, D]
        mask = batch["caption_mask"].cpu()  # [B, n]
        emb = torch.nn.functional.normalize(batch["text_embeddings"].float().cpu(), dim=-1)  # [B, n, D]
        for i in range(mask.shape[0]):
            n = int(mask[i].sum())
            texts.append(emb[i, :n])
            owners += [n_images + i] * n
            captions += batch["captions"][i]
        n_images += mask.shape[0]
        if keep_thumbnails is None or len(thumbs) < keep_thumbnails:  # undo the device normalization for display
            pix = batch["image"].float().cpu()
            mean, std = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(CLIP_STD).view(1, 3, 1, 1)
            pix = ((pix * std + mean).clamp(0, 1) * 255).byte().permute(0, 2, 3, 1).numpy()
            thumbs += [Image.fromarray(p).resize((128, 128)) for p in pix]
    return {"image": torch.cat(images), "text": torch.cat(texts), "owner": torch.tensor(owners),
            "captions": captions, "thumbs": thumbs}


def write_result(out_dir: Path, model: LoadedModel, shards: str, result: dict) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = results_path(out_dir, shards, result["protocol"])
    record = {"checkpoint": str(model.path), "step": model.step, "shards": redact(shards), **result}
    write_text_atomic(path, json.dumps(record, indent=2) + "\n")
    return path


def evaluate_checkpoint(checkpoint: str | Path, shards: str, *, device: str = "cpu", batch_size: int = 64,
                        out: str | Path | None = None, protocol: str = "all", flag: str = "--shards") -> dict:
    """Recall@K of a checkpoint on a shard set under `protocol` (a `PROTOCOLS` key), written to `out` (default: the
    checkpoint's folder) as `eval-<shards>-<hash>[-<protocol>].json` (`results_path`); returns the results. Errors
    name `flag`, the option the shards were given with."""
    loaded = load_model(checkpoint, device)
    result = score(embed_shards(loaded.model, shards, device=torch.device(device), batch_size=batch_size,
                                flag=flag), PROTOCOLS[protocol])
    write_result(Path(out) if out else loaded.path.parent, loaded, shards, result)
    return result


def manifest_or_none(shards: str) -> Manifest | None:
    """The shards' manifest, or None for a source without one next to it (a brace pattern, a list of URLs)."""
    try:
        return read_manifest(shards)
    except FileNotFoundError:
        return None


def locate_text_encoder(manifest: Manifest, shards: str) -> str:
    """The encoder the manifest names, as a path that works from here or a hub id. A relative path (recorded as
    given to the builder) is tried as given, then against the shard folder and each folder above it."""
    info = manifest.text_encoder
    name = str(info.get("path") or info.get("name") or "")
    recorded = Path(name).expanduser()
    tries = [recorded]
    if not recorded.is_absolute() and not is_remote(shards):
        folder = Path(shards).resolve()
        tries += [base / recorded for base in (folder, *folder.parents)]
    for candidate in tries:
        if candidate.is_dir():
            return str(candidate)
    hub_id = re.fullmatch(r"[\w.-]+/[\w.-]+", name) is not None and "path" not in info
    if hub_id:
        return name
    raise UserError(f"the shards' manifest names the text encoder {name!r}, a local path that is not a folder from "
                    f"here, from {shards} or the folders above it: pass --text-encoder PATH")


def own_training(loaded: LoadedModel, shards: str) -> str | None:
    """A warning line when `shards` hold files the checkpoint was trained on (None when its train shards are gone
    or unreadable from here, or named a password that the checkpoint does not keep: nothing to compare)."""
    if not loaded.train_shards or "****@" in loaded.train_shards:
        return None
    try:
        train = loaded.train_shards
        train_urls = [u for t in ([train] if isinstance(train, str) else train) for u in resolve_source(t).urls]
        eval_urls = resolve_source(shards).urls
    except SourceError:
        return None
    return own_training_warning(eval_urls=eval_urls, train_urls=train_urls,
                                train_shards=train if isinstance(train, str) else " ".join(train))


def run(cfg: EvalConfig) -> int:
    """The CLI's work: for each shard set its Recall@K table, results file and retrieval plots; with several sets,
    one table with a row per set at the end."""
    device = torch.device(auto_device() if cfg.device == "auto" else cfg.device)
    unseen = Path(cfg.unseen) if cfg.unseen else None
    if unseen is not None and not unseen.is_dir():
        raise UserError(f"--unseen {unseen}: not a folder")
    loaded = load_model(cfg.checkpoint, device)
    manifests = {}
    for shards, protocol in cfg.pairs():  # every set checked before any work
        manifests[shards] = manifest_or_none(shards)
        if manifests[shards] is not None:
            check_protocol(PROTOCOLS[protocol], manifests[shards].n_samples)
            check_width(loaded.state, loaded.path, embed_dim=manifests[shards].embed_dim, flag="--shards",
                        shards=shards)
    rows = [(shards, evaluate_set(loaded, shards, PROTOCOLS[protocol], manifests[shards], cfg, device=device,
                                  unseen=unseen)) for shards, protocol in cfg.pairs()]
    if len(rows) > 1:
        print(format_sets_table(rows))
    return 0


def evaluate_set(loaded: LoadedModel, shards: str, protocol: Protocol, manifest: Manifest | None, cfg: EvalConfig,
                 *, device: torch.device, unseen: Path | None) -> dict:
    """One set: its table, notes, results file and pictures; returns its results."""
    encoder = cfg.text_encoder
    if cfg.queries and encoder is None:
        if manifest is None:
            raise UserError(f"--query needs --text-encoder: {shards} has no manifest.json naming the encoder")
        encoder = locate_text_encoder(manifest, shards)
    thumbs = None if cfg.queries else cfg.show_images  # a query may pick any image; else only the rows shown
    emb = embed_shards(loaded.model, shards, device=device, batch_size=cfg.batch_size, keep_thumbnails=thumbs)
    result = score(emb, protocol)
    out_dir = Path(cfg.out) if cfg.out else loaded.path.parent
    print(f"{loaded.path} (step {loaded.step}) on {redact(str(shards))}: {result['n_images']} images, "
          f"{result['n_captions']} captions ranked in {result['recall_seconds']:.1f} s")
    print(format_table(result))
    note = small_split_note(result["fold_images"])
    if note:
        print(note)
    if protocol.n_images is not None and not is_karpathy_test(manifest, emb["image"].shape[0], protocol):
        name = "" if protocol.dataset == "coco" else "Flickr30k "
        print(f"note: these shards are not Karpathy's {name}{TEST_IMAGES[protocol.dataset]}-image test split, so the "
              f"{protocol.name} figures do not compare with published ones (build it: {karpathy_build(protocol)})")
    warning = ""
    if manifest is not None and manifest.text_encoder.get("random_init"):
        warning = "random-init text tower (manifest): these pictures check the wiring, not what the model understands"
        print("note: these shards' text embeddings come from a random-init text tower: the numbers and pictures "
              "check the wiring, not what the model understands")
    own = own_training(loaded, shards)
    if own:
        print(f"warning: {own}", file=sys.stderr)
    print(f"wrote {write_result(out_dir, loaded, shards, result)}")
    if (out_dir / METRICS_NAME).is_file():  # a training run's folder: its curves gain this evaluation's point
        print(f"wrote {write_curves(out_dir)}")
    query_emb = None
    if cfg.queries:
        from shardgen.text.encoder import TextEncoder

        query_emb = TextEncoder(encoder, device=device).encode(list(cfg.queries))
    for path in qualitative(loaded.model, emb, queries=list(cfg.queries), query_emb=query_emb,
                            n_images=cfg.show_images, unseen=unseen, out_dir=out_dir, device=device,
                            transform=clip_transform(), warning=warning, label=shards_label(shards)):
        print(f"wrote {path}")
    return result


def make_parser() -> argparse.ArgumentParser:
    """The options: each `dest` is a field of `EvalConfig` (but `--query`: `queries`), each default read off it."""
    d = EvalConfig(checkpoint="", shards="")
    p = argparse.ArgumentParser(prog="python -m models.evaluate", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="checkpoint file, or a training --out folder (its latest.pt)")
    p.add_argument("--shards", required=True, nargs="+", metavar="SHARDS",
                   help="val shard folder/URL; several: one evaluation each, one table with a row per set")
    p.add_argument("--device", default=d.device, help="auto = CUDA, else Apple MPS (untested), else CPU")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="images per forward pass")
    p.add_argument("--query", action="append", default=list(d.queries), help="free-text query (repeatable)")
    p.add_argument("--text-encoder", default=d.text_encoder,
                   help="for --query (default: the one named in the shards' manifest)")
    p.add_argument("--show-images", type=int, default=d.show_images, help="image → caption rows in the plot")
    p.add_argument("--unseen", default=d.unseen, help="folder of arbitrary images to caption-retrieve")
    p.add_argument("--out", default=d.out, help="folder for results and plots (default: the checkpoint's folder)")
    p.add_argument("--protocol", choices=list(PROTOCOLS), nargs="+", default=d.protocol,
                   help="all = every image of the shards; 5k = the first 5000 images (Karpathy's test split), "
                        "all their captions; 1k = mean over 5 folds of 1000 of them; flickr30k-1k = Flickr30k's "
                        "1000-image test split; one for every --shards set, or one per set")
    return p


def main(argv: list[str] | None = None) -> int:
    """The CLI. Exit codes (`shardgen.format.errors.report`): 0 done, 2 bad input or bad data in the shards (one
    line), 130 interrupted; `--help` returns 0 and a usage error 2 (argparse printed them)."""
    try:
        a = make_parser().parse_args(argv)
    except SystemExit as exc:
        return parser_exit_code(exc)
    try:
        return run(config_from_options(EvalConfig, a, queries=tuple(a.query)))
    except HANDLED as exc:  # bad input (an option EvalConfig refuses, a path) or data (a shard or manifest that
        # does not parse): one line, exit 2
        return report("evaluate", exc)


if __name__ == "__main__":
    sys.exit(main())
