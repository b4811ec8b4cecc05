"""The `shardgen` command line. The only module that sees argparse; each subcommand calls one library function.

Exit codes: 0 success, 1 verification found problems, 2 bad input (one line on stderr), 130 interrupted.
Only `UserError` (bad input or environment) and `FormatError` (data that does not follow the format) become that
one line; any other exception is a bug and keeps its traceback. `shardgen build`'s defaults are read off
`BuildConfig`, never restated here. Importing this module loads neither torch nor the format layer (numpy,
fsspec), so `--help` answers at once; each subcommand imports what it needs.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import fields
from pathlib import Path

from .config import BuildConfig, build_default

PACKAGE = "coco-clip-shards"
EPILOG = """examples:
  shardgen sample data/sample --images 200
  shardgen init-encoder models/clip-random --size full
  shardgen build --coco-root data/sample --split train --out shards/train --text-encoder models/clip-random
  shardgen verify shards/train
  shardgen show shards/train --out grid.png --n 16
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


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(PACKAGE)
    except PackageNotFoundError:
        return "unknown"


class _VersionAction(argparse.Action):
    """`--version`, looking the version up only when asked (argparse's own action needs it at parser build)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS,
                 help="print the version and exit"):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{parser.prog} {package_version()}")
        parser.exit()


def _add_build(sub) -> None:
    p = sub.add_parser("build", help="COCO split → tar shards + manifest",
                       description="Turn one COCO 2014 split into WebDataset tar shards: one sample per image with "
                                   "the preprocessed JPEG, all captions and their CLIP text embeddings.")
    d = build_default
    p.add_argument("--coco-root", dest="coco_root", required=True, type=Path,
                   help="COCO folder (official zips, Kaggle, any nesting)")
    p.add_argument("--split", required=True, choices=["train", "val"])
    p.add_argument("--out", required=True, help="output folder (one per split), or s3://... gs://... to build "
                   "in a local staging folder and upload each shard as it closes")
    p.add_argument("--staging", type=Path, default=None, help="local folder for --out URLs "
                   "(default: .shardgen-staging/<bucket_path>)")
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
    p.add_argument("--dali-index", dest="dali_index", action="store_true", default=d("dali_index"),
                   help="also write DALI v1.2 .idx files next to the shards")
    p.add_argument("--quiet", dest="progress", action="store_false", default=d("progress"),
                   help="no progress bars")


def _build_config(args: argparse.Namespace, out: Path) -> BuildConfig:
    """The BuildConfig the options ask for; a value it refuses is the user's to fix (one line naming the option)."""
    from .errors import UserError

    values = {f.name: getattr(args, f.name) for f in fields(BuildConfig) if hasattr(args, f.name)}
    try:
        return BuildConfig(**{**values, "out": out})
    except ValueError as exc:  # BuildConfig's messages start with the field name
        message = str(exc)
        name = message.split(" ", 1)[0]
        raise UserError(f"--{name.replace('_', '-')} {message.split(' ', 1)[1]}" if name in values else message) \
            from None


def _cmd_build(args) -> int:
    from .build import build_shards
    from .format import is_remote

    dest = str(args.out)
    out = Path(args.out)
    if is_remote(dest):  # build into a local staging folder, upload each shard as it closes, manifest last
        out = args.staging or Path(".shardgen-staging") / dest.split("://", 1)[1].replace("/", "_")
    cfg = _build_config(args, out)
    if is_remote(dest):
        report = _build_and_upload(cfg, dest, quiet=not cfg.progress)
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
    from .format import with_timeouts
    from .upload import remove_indexes, upload

    fs, root = fsspec.core.url_to_fs(dest, **with_timeouts(dest))
    remove_indexes(fs, root.rstrip("/"))  # readers never see an old manifest over the new build's shards
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


def _require_manifest(source: str) -> None:
    """A source without a manifest is a wrong path (the user's to fix), not a bug."""
    from .errors import UserError
    from .format import MANIFEST_NAME, read_manifest

    try:
        read_manifest(source)
    except FileNotFoundError:
        raise UserError(f"{source}: no {MANIFEST_NAME} there; point at a folder written by `shardgen build` "
                        "(one split, e.g. shards/val)") from None


def _cmd_show(args) -> int:
    from .show import show

    _require_manifest(args.source)
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


def _md5_overrides(items: list[str], known: set[str]) -> dict[str, str]:
    from .errors import UserError

    md5 = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name not in known or not re.fullmatch(r"[0-9a-fA-F]{32}", value):
            raise UserError(f"--md5 {item!r}: expected NAME=HEX with NAME one of {', '.join(sorted(known))} and "
                            "HEX 32 hex digits")
        md5[name] = value.lower()
    return md5


def _cmd_download(args) -> int:
    from .download import (
        COCO_FILES,
        DEFAULT_BASE_URL,
        download_coco,
        download_kaggle,
        report,
    )
    from .errors import UserError

    if args.source == "kaggle":
        where = download_kaggle(args.root, progress=not args.quiet, warn=lambda m: print(m, file=sys.stderr))
        print(f"kaggle: credentials from {where}")
    else:
        splits = tuple(s for s in args.splits.split(",") if s)
        unknown = [s for s in splits if s not in COCO_FILES or s == "annotations"]
        if unknown:
            raise UserError(f"--splits {args.splits!r}: unknown split {unknown[0]!r} (use train, val or train,val)")
        done = download_coco(args.root, splits=splits, base_url=args.base_url or DEFAULT_BASE_URL,
                             md5=_md5_overrides(args.md5, set(COCO_FILES)), workers=args.workers,
                             keep_zips=args.keep_zips, max_extract_bytes=args.max_extract_bytes,
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

    _require_manifest(args.source)
    res = export_clip_benchmark(args.source, args.out, split=args.split, samples_per_shard=args.samples_per_shard)
    print(f"wrote CLIP_benchmark retrieval layout: {res['n_samples']} samples in {res['n_shards']} shards under "
          f"{args.out}/{args.split}; run: clip_benchmark eval --dataset wds/coco_shardgen --dataset_root {args.out} "
          "--task zeroshot_retrieval ...")
    return 0


def _add_download(sub) -> None:
    p = sub.add_parser("download", help="download COCO 2014 (Kaggle or the official zips)",
                       description="Download COCO 2014 and print the layout found. Official zips resume, retry "
                                   "and are MD5-checked; extraction refuses members escaping --root and zips "
                                   "that would expand beyond what COCO's zips hold.")
    p.add_argument("--root", required=True, type=Path, help="folder to download into")
    p.add_argument("--source", choices=["coco", "kaggle"], default="coco")
    p.add_argument("--splits", default="train,val", help="comma list of train,val (coco source)")
    p.add_argument("--base-url", default=None, help="mirror of images.cocodataset.org (coco source)")
    p.add_argument("--md5", action="append", default=[], metavar="NAME=HEX",
                   help="override an expected MD5 (NAME: annotations, train, val), e.g. for a mirror")
    p.add_argument("--max-extract-bytes", type=parse_byte_size, default=None, metavar="SIZE",
                   help="refuse a zip that would expand beyond SIZE (default: per zip, about 1.5x what the "
                        "official COCO 2014 zip holds)")
    p.add_argument("--workers", type=positive_int, default=3, help="parallel downloads (default: 3)")
    p.add_argument("--keep-zips", action="store_true", help="keep the zips after extraction")
    p.add_argument("--quiet", action="store_true")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shardgen", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Make WebDataset shards of MS COCO 2014 for CLIP fine-tuning: images + captions + "
                    "frozen CLIP text embeddings, verified and reproducible.")
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_build(sub)

    p = sub.add_parser("verify", help="check shards against their manifest (exit 1 on problems)",
                       description="Recount and checksum every shard, decode every image, check every embedding.")
    p.add_argument("source", help="shard folder or URL (s3://, https://) holding manifest.json")
    p.add_argument("--quiet", action="store_true")

    p = sub.add_parser("show", help="write an image/caption grid PNG and print statistics")
    p.add_argument("source", help="shard folder or URL holding manifest.json")
    p.add_argument("--out", required=True, type=Path, help="PNG file to write")
    p.add_argument("--n", type=positive_int, default=16, help="number of samples in the grid (default: 16)")
    p.add_argument("--columns", type=positive_int, default=4)

    _add_download(sub)

    p = sub.add_parser("upload", help="copy shards to cloud storage (any fsspec URL), manifest last",
                       description="Upload shards in parallel, skip those already there (resume), verify what "
                                   "landed, then write sizes.json, shardindex.json and manifest.json.")
    p.add_argument("src", type=Path, help="local shard folder")
    p.add_argument("dest", help="s3://bucket/prefix, gs://..., az://..., file://...")
    p.add_argument("--workers", type=positive_int, default=8)
    p.add_argument("--endpoint-url", default=None, help="S3-compatible endpoint (default: $AWS_ENDPOINT_URL)")
    p.add_argument("--quiet", action="store_true")

    p = sub.add_parser("export", help="rewrite shards for another tool (CLIP_benchmark retrieval layout)")
    p.add_argument("source", help="shard folder or URL holding manifest.json (usually the val split)")
    p.add_argument("--format", choices=["clip-benchmark"], default="clip-benchmark")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--split", default="test", help="CLIP_benchmark split folder name (default: test)")
    p.add_argument("--samples-per-shard", type=positive_int, default=1000)

    p = sub.add_parser("sample", help="write the embedded synthetic COCO-layout sample dataset")
    p.add_argument("out_dir", type=Path)
    p.add_argument("--images", type=positive_int, default=200, help="train images (default: 200)")
    p.add_argument("--val-images", type=positive_int, default=None, help="val images (default: images/5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=positive_int, default=os.cpu_count() or 1)
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


def _parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse; an unknown option is reported with its subcommand's usage (argparse reports it at the top)."""
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        subcommands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        subcommands.choices[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parse(make_parser(), argv)
    except SystemExit as exc:  # --help, --version, or a usage error (argparse printed it)
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    from .errors import FormatError, UserError

    try:
        return COMMANDS[args.command](args)
    except (UserError, FormatError) as exc:
        print(f"shardgen {args.command}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"shardgen {args.command}: interrupted (rerun the same command to resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
