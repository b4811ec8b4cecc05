"""`shardgen build`'s options: the sub-parser, the `BuildConfig` it asks for (defaults read off `BuildConfig`,
never restated), and the command itself, plus the argument types the other subcommands share (byte sizes, counts).

Imports neither torch nor the format layer, so `shardgen build --help` answers at once.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import fields
from pathlib import Path

from ..config import BuildConfig, build_default, config_from_options
from ..sharding.executors import names as executor_names
from ..sources.inputs import options as input_options

DESCRIPTION = """\
Turn one COCO split into WebDataset tar shards: one sample per image with the preprocessed JPEG, all captions and
their CLIP text embeddings.

splits (--split):
  train, val               COCO 2014 (train2014/, captions_train2014.json, COCO_train2014_000000123456.jpg)
  train2017, val2017       COCO 2017 (train2017/, captions_train2017.json, 000000123456.jpg)
  with --karpathy FILE     Karpathy's splits of COCO 2014 (dataset_coco.json from caption_datasets.zip):
    train                  82,783 images (Karpathy's train only)
    restval                30,504 images (the rest of val2014)
    train+restval          113,287 images: the "113k" training set of the retrieval literature
    val, test              5,000 images each; test is the "5k" test set (and its five "1k" folds)
  Karpathy captions are the split file's sentences[].raw; shards are named karpathy_<split>-NNNNNN.tar
  (train+restval: karpathy_train_restval).

other inputs (instead of --coco-root):
  --karpathy dataset_flickr30k.json --image-root flickr30k-images --split train|val|test
                           Flickr30k (or Flickr8k) through Karpathy's split file; shards flickr30k_<split>-*.tar
  --captions FILE --image-root DIR [--split S]
                           an image-caption table (.jsonl, .csv, .parquet): columns image, caption [, image_id,
                           split], one row per caption; shards <S>-*.tar (all-*.tar without --split)
  --webdataset 'dir/{00000..00099}.tar'
                           webdataset shards as img2dataset writes them (jpg + txt per sample), re-sharded
  --coco-root, --karpathy, --image-root, --captions and --webdataset also take URLs (s3://bucket/coco, https://...).

executors (--executor):
  local                    shard tasks on --workers processes of this machine (default)
  inline                   every task in this process, one after another (debugging, profiling)
  ray                      Ray tasks on --ray-address HOST:PORT, auto or ray://HOST:10001 (or RAY_ADDRESS; else a
                           Ray started here): the same bytes; each node is checked first (input, encoder, credentials,
                           Pillow/libjpeg versions); relative paths are made absolute here
  Each shard task writes its own shard straight to --out (a folder, or s3://... gs://...).
"""
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_byte_size(text: str) -> int:
    """`512MiB`, `1GB`, `1.5 GiB`, `536870912` → bytes (KB/MB/GB are powers of 1000, KiB/MiB/GiB of 1024)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*", text)
    unit = match and match.group(2).lower()
    if not match or unit not in _UNITS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (examples: 536870912, 512MiB, 1GB)")
    return int(float(match.group(1)) * _UNITS[unit]) if "." in match.group(1) else int(match.group(1)) * _UNITS[unit]


def format_byte_size(n: int) -> str:
    for unit in ("TiB", "GiB", "MiB", "KiB"):
        if n >= _UNITS[unit.lower()] and n % _UNITS[unit.lower()] == 0:
            return f"{n // _UNITS[unit.lower()]} {unit}"
    return f"{n} bytes"


def path_or_url(text: str) -> Path | str:
    """A local path as a `Path`, a URL (s3://, gs://, https://) kept as text (a `Path` folds `//` into `/`)."""
    return text if re.match(r"[A-Za-z][A-Za-z0-9+.-]+://", text) else Path(text)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_build(sub) -> None:
    p = sub.add_parser("build", help="COCO split → tar shards + manifest", description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    d = build_default
    p.add_argument("--split", default=None, metavar="SPLIT",
                   help="train, val (COCO 2014), train2017, val2017 (COCO 2017); with --karpathy: train, restval, "
                        "train+restval, val, test; with --captions: the rows whose split column holds it")
    for option in input_options():  # each input kind's own options (`sources.inputs`)
        p.add_argument(option.flag, dest=option.dest, type=path_or_url if option.url else str, metavar=option.metavar,
                       default=option.default, help=option.help)
    p.add_argument("--out", required=True, type=path_or_url, help="output folder (one per split), or s3://... "
                   "gs://...: the shard tasks write their shards there themselves, the manifest goes last")
    p.add_argument("--staging", dest="staging", type=Path, default=d("staging"), help="with an --out URL: the "
                   "local work folder for the lock, the journal and the caption cache (~1 KB per unique caption at "
                   "512-d) (default: .shardgen-staging/<bucket_path>)")
    _add_processing(p)


def _add_processing(p: argparse.ArgumentParser) -> None:
    d = build_default
    p.add_argument("--text-encoder", dest="text_encoder", default=d("text_encoder"),
                   help="HF hub id or local HF-format folder (default: %(default)s)")
    p.add_argument("--image-size", dest="image_size", type=int, default=d("image_size"),
                   help="shorter side after resize (default: %(default)s)")
    p.add_argument("--no-crop", dest="crop", action="store_false", default=d("crop"),
                   help="keep the aspect ratio (shorter side = --image-size) for random crops at train time")
    p.add_argument("--jpeg-quality", dest="jpeg_quality", type=int, default=d("jpeg_quality"),
                   help="JPEG quality of stored images (default: %(default)s)")
    p.add_argument("--no-draft", dest="draft", action="store_false", default=d("draft"),
                   help="decode JPEGs at full size (slower, slightly sharper)")
    p.add_argument("--samples-per-shard", dest="samples_per_shard", type=int, default=d("samples_per_shard"),
                   help="samples per shard (default: %(default)s)")
    p.add_argument("--max-shard-bytes", dest="max_shard_bytes", type=parse_byte_size, default=d("max_shard_bytes"),
                   metavar="SIZE", help="start a new shard before one would exceed this, e.g. 512MiB or 1GB "
                   f"(default: {format_byte_size(d('max_shard_bytes'))})")
    p.add_argument("--max-image-pixels", dest="max_image_pixels", type=int, default=d("max_image_pixels"),
                   metavar="N", help="count images whose header claims more pixels as too_large, before decoding "
                   f"(default: {d('max_image_pixels'):_}; COCO's largest is 409_600)")
    p.add_argument("--workers", type=int, default=d("workers"), help="image processes (default: all cores, "
                   "%(default)s here)")
    p.add_argument("--encode-batch-size", dest="encode_batch_size", type=int, default=d("encode_batch_size"),
                   help="captions per text-encoder batch (default: %(default)s)")
    p.add_argument("--device", default=d("device"), help="text encoder device: auto, cpu, cuda, cuda:1 ... "
                   "(default: %(default)s)")
    p.add_argument("--limit", type=int, default=d("limit"), help="only the first N images (smoke tests)")
    p.add_argument("--embeddings-cache", dest="embeddings_cache", type=Path, default=d("embeddings_cache"),
                   help="caption embedding cache file (default: OUT/<split>_text_embeddings.pt)")
    p.add_argument("--dali-index", dest="dali_index", action=argparse.BooleanOptionalAction, default=d("dali_index"),
                   help="write a DALI v1.2 .idx index next to each shard: the loader seeks inside shards with it "
                        "(when ranks × workers outnumber the shards, or a resume lands mid-shard), DALI reads it "
                        "(default: on)")
    p.add_argument("--executor", choices=executor_names(), default=d("executor"),
                   help="where shard tasks run: inline (this process), local (--workers processes), or ray (a Ray "
                        "cluster) (default: %(default)s)")
    p.add_argument("--ray-address", dest="ray_address", default=d("ray_address"), metavar="ADDR",
                   help="the Ray cluster for --executor ray (default: RAY_ADDRESS, else a Ray started here)")
    p.add_argument("--quiet", dest="progress", action="store_false", default=d("progress"),
                   help="no progress bars")


def build_config(args: argparse.Namespace) -> BuildConfig:
    """The BuildConfig the options ask for; a value it refuses is the user's to fix (one line naming the option).
    An input kind's option that is no `BuildConfig` field goes into its `source_options`."""
    known = {f.name for f in fields(BuildConfig)}
    extra = {o.dest: getattr(args, o.dest) for o in input_options() if o.dest not in known}
    return config_from_options(BuildConfig, args, source_options=extra)


def cmd_build(args) -> int:
    from ..format import printable_name, redact
    from ..publish.upload import build_and_upload
    from ..sharding.pipeline import build_shards

    cfg = build_config(args)
    if "://" in str(cfg.out):  # the tasks write to the store; another dataset's prefix is refused first
        report = build_and_upload(cfg)
        print(f"written to {redact(str(cfg.out))}: {len(report.manifest.shards)} shards, the manifest last")
    else:
        report = build_shards(cfg)
    print(report.summary())
    for reason, entry in report.manifest.failures.items():
        shown = ", ".join(printable_name(redact(name)) for name in entry["files"][:5])
        unit = "caption rows" if entry.get("unit") == "caption" else "images"
        print(f"  skipped {entry['count']} {unit} ({reason}): {shown}"
              + (" ..." if entry["count"] > 5 else ""))
    return 0

