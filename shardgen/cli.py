"""The `shardgen` command line. The only module that sees argparse; each subcommand calls one library function.

Exit codes: 0 success, 1 verification found problems, 2 bad input (one line on stderr), 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .config import DEFAULT_TEXT_ENCODER

EPILOG = """examples:
  shardgen sample data/sample --images 200
  shardgen init-encoder models/clip-random --size full
  shardgen build --coco-root data/sample --split train --out shards/train --text-encoder models/clip-random
  shardgen verify shards/train
  shardgen show shards/train --out grid.png --n 16
"""


def _add_build(sub) -> None:
    p = sub.add_parser("build", help="COCO split → tar shards + manifest",
                       description="Turn one COCO 2014 split into WebDataset tar shards: one sample per image with "
                                   "the preprocessed JPEG, all captions and their CLIP text embeddings.")
    p.add_argument("--coco-root", required=True, type=Path, help="COCO folder (official zips, Kaggle, any nesting)")
    p.add_argument("--split", required=True, choices=["train", "val"])
    p.add_argument("--out", required=True, help="output folder (one per split), or s3://... gs://... to build "
                   "in a local staging folder and upload each shard as it closes")
    p.add_argument("--staging", type=Path, default=None, help="local folder for --out URLs "
                   "(default: .shardgen-staging/<bucket_path>)")
    p.add_argument("--text-encoder", default=DEFAULT_TEXT_ENCODER,
                   help=f"HF hub id or local HF-format folder (default: {DEFAULT_TEXT_ENCODER})")
    p.add_argument("--image-size", type=int, default=224, help="shorter side after resize (default: 224)")
    p.add_argument("--no-crop", action="store_true",
                   help="keep the aspect ratio (shorter side = --image-size) for random crops at train time")
    p.add_argument("--jpeg-quality", type=int, default=90, help="JPEG quality of stored images (default: 90)")
    p.add_argument("--no-draft", action="store_true", help="decode JPEGs at full size (slower, slightly sharper)")
    p.add_argument("--samples-per-shard", type=int, default=1000, help="samples per shard (default: 1000)")
    p.add_argument("--max-shard-bytes", type=int, default=512 * 1024 * 1024,
                   help="start a new shard before one would exceed this (default: 512 MiB)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="image processes (default: all cores)")
    p.add_argument("--encode-batch-size", type=int, default=256, help="captions per text-encoder batch")
    p.add_argument("--device", default="auto", help="text encoder device: auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--limit", type=int, default=None, help="only the first N images (smoke tests)")
    p.add_argument("--embeddings-cache", type=Path, default=None,
                   help="caption embedding cache file (default: OUT/<split>_text_embeddings.pt)")
    p.add_argument("--dali-index", action="store_true", help="also write DALI v1.2 .idx files next to the shards")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _cmd_build(args) -> int:
    from .build import BuildConfig, build_shards
    from .format import is_remote

    dest = str(args.out)
    if is_remote(dest):  # build into a local staging folder, upload each shard as it closes, manifest last
        args.out = args.staging or Path(".shardgen-staging") / dest.split("://", 1)[1].replace("/", "_")
    cfg = BuildConfig(coco_root=args.coco_root, split=args.split, out=Path(args.out), text_encoder=args.text_encoder,
                      image_size=args.image_size, crop=not args.no_crop, jpeg_quality=args.jpeg_quality,
                      draft=not args.no_draft, samples_per_shard=args.samples_per_shard,
                      max_shard_bytes=args.max_shard_bytes, workers=args.workers,
                      encode_batch_size=args.encode_batch_size, device=args.device, limit=args.limit,
                      embeddings_cache=args.embeddings_cache, dali_index=args.dali_index, progress=not args.quiet)
    if is_remote(dest):
        report = _build_and_upload(cfg, dest, quiet=args.quiet)
    else:
        report = build_shards(cfg)
    print(report.summary())
    for reason, entry in report.manifest.failures.items():
        print(f"  skipped {entry['count']} ({reason}): {', '.join(entry['files'][:5])}"
              + (" ..." if entry["count"] > 5 else ""))
    return 0


def _build_and_upload(cfg, dest: str, *, quiet: bool):
    """MosaicML's pattern: each finished shard starts uploading while the build goes on; indexes go last."""
    from concurrent.futures import ThreadPoolExecutor

    import fsspec

    from .build import build_shards
    from .upload import upload

    fs, root = fsspec.core.url_to_fs(dest)
    with ThreadPoolExecutor(2) as pool:
        pending = []
        report = build_shards(cfg, on_shard=lambda p: pending.append(
            pool.submit(fs.put_file, str(p), f"{root.rstrip('/')}/{p.name}")))
        for f in pending:
            f.result()
    rep = upload(cfg.out, dest, progress=not quiet)  # verifies every shard (re-sends any that differ), manifest last
    print(f"uploaded to {dest}: {len(rep.skipped)} shards verified in place, {len(rep.uploaded)} files sent")
    return report


def _cmd_verify(args) -> int:
    from .verify import verify

    report = verify(args.source, progress=not args.quiet)
    for problem in report.problems:
        print(f"PROBLEM {problem}")
    status = "OK" if report.ok else f"FAILED ({len(report.problems)} problems)"
    print(f"verify {args.source}: {report.n_shards} shards, {report.n_samples} samples, "
          f"{report.n_bytes / 1e6:.1f} MB: {status}")
    return 0 if report.ok else 1


def _cmd_show(args) -> int:
    from .show import show

    stats = show(args.source, args.out, n=args.n, columns=args.columns)
    print(stats.table())
    print(f"wrote {args.out}")
    return 0


def _cmd_sample(args) -> int:
    from .sample import make_sample

    out = make_sample(args.out_dir, images=args.images, val_images=args.val_images, seed=args.seed,
                      workers=args.workers, progress=not args.quiet)
    print(f"wrote a COCO-2014-layout sample to {out} ({args.images} train images)")
    return 0


def _cmd_init_encoder(args) -> int:
    from .encoder_init import init_encoder

    out = init_encoder(args.dir, size=args.size, seed=args.seed, bpe_vocab=args.bpe_vocab)
    print(f"wrote a random-init CLIP text encoder ({args.size}) with the CLIP BPE tokenizer to {out} "
          "(embeddings from it are not semantically meaningful)")
    return 0


def _cmd_download(args) -> int:
    from .download import DEFAULT_BASE_URL, download_coco, download_kaggle, report

    if args.source == "kaggle":
        where = download_kaggle(args.root, progress=not args.quiet, warn=lambda m: print(m, file=sys.stderr))
        print(f"kaggle: credentials from {where}")
    else:
        md5 = dict(item.split("=", 1) for item in args.md5)
        done = download_coco(args.root, splits=tuple(args.splits.split(",")), base_url=args.base_url or
                             DEFAULT_BASE_URL, md5=md5, workers=args.workers, keep_zips=args.keep_zips,
                             progress=not args.quiet)
        print(f"downloaded and extracted {', '.join(done)}" if done else "everything is already present; nothing to do")
    print(report(args.root))
    return 0


def _cmd_upload(args) -> int:
    from .upload import upload

    opts = {"endpoint_url": args.endpoint_url} if args.endpoint_url else {}
    rep = upload(args.src, args.dest, workers=args.workers, storage_options=opts, progress=not args.quiet)
    print(f"upload {args.dest}: {len(rep.uploaded)} files sent ({rep.n_bytes / 1e6:.1f} MB of shards), "
          f"{len(rep.skipped)} already there and verified")
    return 0


def _cmd_export(args) -> int:
    from .export import export_clip_benchmark

    res = export_clip_benchmark(args.source, args.out, split=args.split, samples_per_shard=args.samples_per_shard)
    print(f"wrote CLIP_benchmark retrieval layout: {res['n_samples']} samples in {res['n_shards']} shards under "
          f"{args.out}/{args.split}; run: clip_benchmark eval --dataset wds/coco_shardgen --dataset_root {args.out} "
          "--task zeroshot_retrieval ...")
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shardgen", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Make WebDataset shards of MS COCO 2014 for CLIP fine-tuning: images + captions + "
                    "frozen CLIP text embeddings, verified and reproducible.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_build(sub)

    p = sub.add_parser("verify", help="check shards against their manifest (exit 1 on problems)",
                       description="Recount and checksum every shard, decode every image, check every embedding.")
    p.add_argument("source", help="shard folder or URL (s3://, https://) holding manifest.json")
    p.add_argument("--quiet", action="store_true")

    p = sub.add_parser("show", help="write an image/caption grid PNG and print statistics")
    p.add_argument("source", help="shard folder or URL holding manifest.json")
    p.add_argument("--out", required=True, type=Path, help="PNG file to write")
    p.add_argument("--n", type=int, default=16, help="number of samples in the grid (default: 16)")
    p.add_argument("--columns", type=int, default=4)

    p = sub.add_parser("download", help="download COCO 2014 (Kaggle or the official zips)",
                       description="Download COCO 2014 and print the layout found. Official zips resume, retry "
                                   "and are MD5-checked; extraction refuses members escaping --root.")
    p.add_argument("--root", required=True, type=Path, help="folder to download into")
    p.add_argument("--source", choices=["coco", "kaggle"], default="coco")
    p.add_argument("--splits", default="train,val", help="comma list of train,val (coco source)")
    p.add_argument("--base-url", default=None, help="mirror of images.cocodataset.org (coco source)")
    p.add_argument("--md5", action="append", default=[], metavar="NAME=HEX",
                   help="override an expected MD5 (NAME: annotations, train, val), e.g. for a mirror")
    p.add_argument("--workers", type=int, default=3, help="parallel downloads (default: 3)")
    p.add_argument("--keep-zips", action="store_true", help="keep the zips after extraction")
    p.add_argument("--quiet", action="store_true")

    p = sub.add_parser("upload", help="copy shards to cloud storage (any fsspec URL), manifest last",
                       description="Upload shards in parallel, skip those already there (resume), verify what "
                                   "landed, then write sizes.json, shardindex.json and manifest.json.")
    p.add_argument("src", type=Path, help="local shard folder")
    p.add_argument("dest", help="s3://bucket/prefix, gs://..., az://..., file://...")
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--endpoint-url", default=None, help="S3-compatible endpoint (default: $AWS_ENDPOINT_URL)")
    p.add_argument("--quiet", action="store_true")

    p = sub.add_parser("export", help="rewrite shards for another tool (CLIP_benchmark retrieval layout)")
    p.add_argument("source", help="shard folder or URL holding manifest.json (usually the val split)")
    p.add_argument("--format", choices=["clip-benchmark"], default="clip-benchmark")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--split", default="test", help="CLIP_benchmark split folder name (default: test)")
    p.add_argument("--samples-per-shard", type=int, default=1000)

    p = sub.add_parser("sample", help="write the embedded synthetic COCO-layout sample dataset")
    p.add_argument("out_dir", type=Path)
    p.add_argument("--images", type=int, default=200, help="train images (default: 200)")
    p.add_argument("--val-images", type=int, default=None, help="val images (default: images/5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--quiet", action="store_true")

    p = sub.add_parser("init-encoder", help="write a random-init CLIP text encoder + real CLIP tokenizer",
                       description="For offline tests and demos: the CLIP text tower architecture with random "
                                   "weights and the real 49408-token BPE tokenizer, in HF format.")
    p.add_argument("dir", type=Path)
    p.add_argument("--size", choices=["full", "tiny"], default="full",
                   help="full = ViT-B/32 text tower (63M params); tiny = for unit tests")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bpe-vocab", type=Path, default=None, help="bpe_simple_vocab_16e6.txt.gz (default: open_clip's)")
    return parser


COMMANDS = {"build": _cmd_build, "verify": _cmd_verify, "show": _cmd_show, "sample": _cmd_sample,
            "init-encoder": _cmd_init_encoder, "export": _cmd_export, "download": _cmd_download,
            "upload": _cmd_upload}


def main(argv: list[str] | None = None) -> int:
    from .errors import SchemaError, UserError

    args = make_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (UserError, SchemaError, ValueError, FileNotFoundError) as exc:
        print(f"shardgen {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"shardgen {args.command}: interrupted (rerun the same command to resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
