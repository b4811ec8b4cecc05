"""The input contract: one `InputSpec` per kind of input, beside its reader, and the registry that collects them.

A spec names its kind, the `BuildConfig` fields (command-line options) it needs and may take, checks a config that
chose it (`check`: `ValueError` starting with the field's name, which the command line turns into one line naming
the option), names the split its shards carry (`dataset_split`) and reads the input (`load`: the records, what was
skipped, the manifest's `source`, and where it came from). The build and the config ask the registry (`select`)
and never branch on the kind of input.

Adding a source (a LAION parquet of URLs, a folder of image + .txt pairs) is one module defining `SPECS` and one
line in `MODULES`, which names the module and its command-line options (so `--help` imports no reader). An option
that is no `BuildConfig` field reaches the spec through `cfg.source_options` (`value`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple



class Loaded(NamedTuple):
    """What a build reads: the split's images and captions, what was skipped, and where they came from."""

    records: Any  # list[ImageRecord] or a `listing.Listing`, sorted by id, one image per id (the build checks)
    report: Any  # CaptionReport
    source: dict[str, Any] | None  # the manifest's `source`; None for COCO 2014's own train/val (as always)
    captions_file: Any  # the file the captions came from (for messages)
    images: str  # the image folder(s), for the log
    kind: str  # the manifest's `provenance.input.kind`
    location: str  # the input as given (for `provenance.input.location`)
    index_files: list  # the files whose sha256 the manifest records (annotations, split file, table)
    tar_list: list[str] | None = None  # a webdataset input's tars (hashed as one listing)


class Option(NamedTuple):
    """A command-line option of an input kind: `--flag VALUE`, read into the config field named like it (or, for
    a field `BuildConfig` does not have, into `cfg.source_options`)."""

    flag: str  # "--coco-root"
    help: str
    metavar: str = "PATH"
    url: bool = True  # a path or URL (a local path becomes a `Path`); False: kept as text (a brace pattern, a name)
    default: Any = None
    names_input: bool = True  # giving it names this kind of input (False: a setting, like a column name)

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


@dataclass(frozen=True)
class InputSpec:
    name: str
    needs: tuple[str, ...]  # config fields that must be given (and select this kind)
    check: Callable[[Any], None]  # (cfg) → None, or ValueError naming the field
    dataset_split: Callable[[Any], str]  # (cfg) → the name the shards carry
    load: Callable[[Any], Loaded]  # (cfg) → what the build reads; UserError on bad input
    takes: tuple[str, ...] = ()  # further input fields it may take


def value(cfg, dest: str) -> Any:
    """The config's value of an input option: a `BuildConfig` field, else from `cfg.source_options`."""
    return getattr(cfg, dest) if hasattr(cfg, dest) else cfg.source_options.get(dest)


def options() -> list[Option]:
    """Every input module's options, each once, read without importing the readers (`shardgen build --help`
    answers at once)."""
    seen: dict[str, Option] = {}
    for module_options in MODULES.values():
        for option in module_options:
            seen.setdefault(option.dest, option)
    return list(seen.values())


def specs() -> list[InputSpec]:
    """Every input kind, in selection order: a kind needing more options before one needing fewer (Karpathy's COCO
    split file with --coco-root before --coco-root alone)."""
    found: list[InputSpec] = []
    for module in MODULES:  # a name of this folder, or a whole module path (a source kept elsewhere)
        found += importlib.import_module(module if "." in module else f"{__package__}.{module}").SPECS
    return sorted(found, key=lambda spec: -len(spec.needs))


def select(cfg) -> InputSpec:
    """The one input kind `cfg` names, checked. Raises ValueError (starting with the field's name) otherwise."""
    given = {o.dest for o in options() if o.names_input and value(cfg, o.dest) is not None}
    for spec in specs():
        if set(spec.needs) <= given:
            extra = sorted(given - set(spec.needs) - set(spec.takes))
            if extra:
                raise ValueError(f"{extra[0]} does not go with --{spec.needs[0].replace('_', '-')} ({spec.name} "
                                 f"input); leave out --{extra[0].replace('_', '-')}")
            spec.check(cfg)
            return spec
    if given == {"karpathy"}:
        raise ValueError("karpathy needs --image-root (the image folder of a Flickr30k or Flickr8k split file) or "
                         "--coco-root (the COCO 2014 folders of Karpathy's dataset_coco.json)")
    if "captions" in given:
        raise ValueError("captions needs --image-root, the folder its image paths are relative to")
    if "image_root" in given:
        raise ValueError("image_root goes with --captions FILE or --karpathy dataset_flickr30k.json "
                         "(not with --coco-root)")
    raise ValueError("coco_root is needed (or --captions FILE --image-root DIR, --karpathy FILE --image-root DIR, "
                     "--webdataset URLS)")


_TABLE_COLUMNS = tuple(
    Option(f"--{column}-column", f"with --captions: the column holding {what} (default: {default})", "NAME",
           url=False, default=default, names_input=False)
    for column, what, default in (("image", "the image path", "image"), ("caption", "the caption", "caption"),
                                  ("id", "the image id (optional)", "image_id"), ("split", "the split (optional)",
                                                                                  "split")))

# The input modules (this folder's, or a whole module path for a source kept elsewhere) and their command-line
# options. Each module defines `SPECS`.
MODULES: dict[str, tuple[Option, ...]] = {
    "coco": (Option("--coco-root", "COCO folder (official zips, Kaggle, any nesting) or URL (s3://bucket/coco)",
                    "DIR"),),
    "karpathy": (Option("--karpathy", "a Karpathy split file (a path or URL): dataset_coco.json with --coco-root "
                        "(its images from the 2014 folders), dataset_flickr30k.json with --image-root; captions "
                        "from the file", "FILE"),),
    "table": (Option("--captions", "an image-caption table (.jsonl, .csv, .parquet; a path or URL) instead of "
                     "--coco-root", "FILE"),
              Option("--image-root", "the folder or URL the --captions table's (or a Flickr split file's) image "
                     "paths are under", "DIR"),
              *_TABLE_COLUMNS),
    "webdataset": (Option("--webdataset", "webdataset tars (img2dataset's jpg + txt per sample): a brace pattern "
                          "of paths or URLs, e.g. 'cc3m/{00000..00331}.tar'", "URLS", url=False),),
}
