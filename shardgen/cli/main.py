"""The `shardgen` command line. The only module that sees argparse; each subcommand calls one library function.

Exit codes: 0 success, 1 verification found problems, 2 bad input or bad data (one line on stderr), 130
interrupted, all mapped by `shardgen.format.errors.report` (as in `models.train` and `models.evaluate`): only
`UserError` and `DataError` become that one line; any other exception is a bug and keeps its traceback.
`shardgen build`'s defaults are read off `BuildConfig`, never restated here. Importing this module loads neither
torch nor the format layer (numpy, fsspec), so `--help` answers at once; each subcommand imports what it needs.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from .build import add_build, cmd_build, parse_byte_size, positive_int

PACKAGE = "coco-clip-shards"
EPILOG = """examples:
  shardgen sample data/sample --images 200
  shardgen init-encoder models/clip-random --size full
  shardgen build --coco-root data/sample --split train --out shards/train --text-encoder models/clip-random
  shardgen build --coco-root data/coco --karpathy data/dataset_coco.json --split test --out shards/karpathy_test
  shardgen build --karpathy dataset_flickr30k.json --image-root flickr30k-images --split test --out shards/f30k
  shardgen build --captions data/captions.csv --image-root data/photos --out shards/photos
  shardgen build --webdataset 'data/laion/{00000..00009}.tar' --out shards/laion
  shardgen verify shards/train
  shardgen show shards/train --out grid.png --n 16
"""
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


def _cmd_verify(args) -> int:
    from ..format import printable_name, redact
    from ..publish.verify import verify

    report = verify(args.source, progress=not args.quiet)
    for problem in report.problems:  # names read from the shards (keys, members): escaped, one line each
        print(f"PROBLEM {printable_name(redact(problem))}")
    status = "OK" if report.ok else f"FAILED ({len(report.problems)} problems)"
    print(f"verify {printable_name(redact(args.source))}: {report.n_shards} shards, {report.n_samples} samples, "
          f"{report.n_bytes / 1e6:.1f} MB: {status}")
    _random_init_note(args.source)
    return 0 if report.ok else 1


def _random_init_note(source: str) -> None:
    """Say so when the embeddings are not semantically meaningful (a manifest that does not read says nothing)."""
    from ..format import FormatError, read_manifest

    try:
        if read_manifest(source).text_encoder.get("random_init"):
            print("note: these shards' caption embeddings come from a random-init text tower (manifest: text_encoder."
                  "random_init): fine for checking the pipeline, meaningless for retrieval")
    except (OSError, FormatError):
        return


def _require_manifest(source: str) -> None:
    """A source without a manifest is a wrong path (the user's to fix), not a bug."""
    from ..errors import UserError
    from ..format import MANIFEST_NAME, read_manifest

    try:
        read_manifest(source)
    except FileNotFoundError:
        raise UserError(f"{source}: no {MANIFEST_NAME} there; point at a folder written by `shardgen build` "
                        "(one split, e.g. shards/val)") from None


def _cmd_show(args) -> int:
    from ..publish.show import show

    _require_manifest(args.source)
    stats = show(args.source, args.out, n=args.n, columns=args.columns)
    print(stats.table())
    print(f"wrote {args.out}")
    _random_init_note(args.source)
    return 0


def _cmd_sample(args) -> int:
    from ..errors import UserError
    from ..sources.synthetic import make_sample

    if args.karpathy and args.year != 2014:
        raise UserError("--karpathy describes COCO 2014's images: use it without --year 2017")
    out = make_sample(args.out_dir, images=args.images, val_images=args.val_images, seed=args.seed,
                      workers=args.workers, progress=not args.quiet, year=args.year)
    print(f"wrote a COCO-{args.year}-layout sample to {out} ({args.images} train images)")
    if args.karpathy:
        from ..sources.karpathy import write_karpathy_file

        n_val = max(1, args.images // 5) if args.val_images is None else args.val_images
        path = write_karpathy_file(out, out / "dataset_coco.json", val=n_val // 4, test=n_val // 4)
        print(f"wrote a Karpathy-format split file {path} (val2014: {n_val // 4} val, {n_val // 4} test, "
              f"{n_val - 2 * (n_val // 4)} restval)")
    return 0


def _cmd_init_encoder(args) -> int:
    from ..text.random_init import init_encoder

    out = init_encoder(args.dir, size=args.size, seed=args.seed, bpe_vocab=args.bpe_vocab,
                       projection_dim=args.projection_dim)
    print(f"wrote a random-init CLIP text encoder ({args.size}, {args.projection_dim}-d) with the CLIP BPE "
          f"tokenizer to {out} (embeddings from it are not semantically meaningful)")
    return 0


def _md5_overrides(items: list[str], known: set[str]) -> dict[str, str]:
    from ..errors import UserError

    md5 = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name not in known or not re.fullmatch(r"[0-9a-fA-F]{32}", value):
            raise UserError(f"--md5 {item!r}: expected NAME=HEX with NAME one of {', '.join(sorted(known))} and "
                            "HEX 32 hex digits")
        md5[name] = value.lower()
    return md5


def _cmd_download(args) -> int:
    from .hints import tool_command
    from ..sources.download import (
        COCO_FILES,
        DEFAULT_BASE_URL,
        download_coco,
        download_kaggle,
        report,
    )
    from ..errors import UserError

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
    print(report(args.root, shardgen=tool_command("shardgen", "shardgen")))
    return 0


def _cmd_upload(args) -> int:
    from ..format import redact
    from ..publish.upload import upload

    opts = {"endpoint_url": args.endpoint_url} if args.endpoint_url else {}
    rep = upload(args.src, args.dest, workers=args.workers, storage_options=opts, progress=not args.quiet,
                 overwrite=args.overwrite)
    print(f"upload {redact(args.dest)}: {len(rep.uploaded)} files sent ({rep.n_bytes / 1e6:.1f} MB of shards), "
          f"{len(rep.skipped)} already there and verified")
    return 0


def _cmd_export(args) -> int:
    from .hints import tool_command
    from ..publish.export import export_clip_benchmark

    _require_manifest(args.source)
    res = export_clip_benchmark(args.source, args.out, split=args.split, samples_per_shard=args.samples_per_shard)
    print(f"wrote CLIP_benchmark retrieval layout: {res['n_samples']} samples in {res['n_shards']} shards under "
          f"{args.out}/{args.split}; run: {tool_command('clip_benchmark', 'clip_benchmark.cli')} eval "
          f"--dataset wds/coco_shardgen --dataset_root {args.out} --task zeroshot_retrieval ...")
    return 0


def _add_upload(sub) -> None:
    p = sub.add_parser("upload", help="copy shards to cloud storage (any fsspec URL), manifest last",
                       description="Check every shard and what the destination holds, then upload shards in "
                                   "parallel, skip those already there (resume), verify what landed, then write "
                                   "sizes.json, shardindex.json and manifest.json.")
    p.add_argument("src", type=Path, help="local shard folder")
    p.add_argument("dest", help="s3://bucket/prefix, gs://..., az://..., file://...")
    p.add_argument("--workers", type=positive_int, default=8)
    p.add_argument("--endpoint-url", default=None, help="S3-compatible endpoint (default: $AWS_ENDPOINT_URL)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace another dataset (other split, source or settings) the destination holds")
    p.add_argument("--quiet", action="store_true")


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
        description="Make WebDataset shards for CLIP fine-tuning from MS COCO (2014, 2017), Karpathy's split files "
                    "(COCO's dataset_coco.json, Flickr30k's dataset_flickr30k.json + --image-root), caption tables "
                    "(--captions: jsonl, csv, parquet + --image-root) or webdataset tars (--webdataset: "
                    "img2dataset output, local or URLs): images + captions + frozen CLIP text embeddings, verified "
                    "and reproducible.")
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_build(sub)

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

    _add_upload(sub)

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
    p.add_argument("--year", type=int, choices=[2014, 2017], default=2014,
                   help="folder and file naming: 2014 (train2014/COCO_train2014_*.jpg) or 2017 (train2017/*.jpg)")
    p.add_argument("--karpathy", action="store_true",
                   help="also write dataset_coco.json, a Karpathy-format split file of the sample (val2014: a "
                        "quarter val, a quarter test, the rest restval)")
    p.add_argument("--quiet", action="store_true")

    p = sub.add_parser("init-encoder", help="write a random-init CLIP text encoder + real CLIP tokenizer",
                       description="For offline tests and demos: the CLIP text tower architecture with random "
                                   "weights and the real 49408-token BPE tokenizer, in HF format.")
    p.add_argument("dir", type=Path)
    p.add_argument("--size", choices=["full", "tiny"], default="full",
                   help="full = ViT-B/32 text tower (63M params); tiny = for unit tests")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bpe-vocab", type=Path, default=None, help="bpe_simple_vocab_16e6.txt.gz (default: open_clip's)")
    p.add_argument("--projection-dim", dest="projection_dim", type=int, default=512, metavar="D",
                   help="width of its embeddings (default: 512, as ViT-B CLIP towers; 768 as ViT-L/14's)")
    return parser


COMMANDS = {"build": cmd_build, "verify": _cmd_verify, "show": _cmd_show, "sample": _cmd_sample,
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
    except SystemExit as exc:  # --help, --version, or a usage error (argparse printed it); as format.errors'
        # parser_exit_code, which `--help` does not import (it answers without the format layer)
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    from ..format.errors import HANDLED, report

    try:
        return COMMANDS[args.command](args)
    except HANDLED as exc:  # bad input or data: one line, exit 2; Ctrl-C: 130; a bug keeps its traceback
        return report(f"shardgen {args.command}", exc, interrupted="interrupted (rerun the same command to resume)")


if __name__ == "__main__":
    sys.exit(main())
