"""Helpers shared by the benchmarks: timing, tables, results files, the sample data they run on."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def table(title: str, rows: list[dict]) -> str:
    cols = list(rows[0])
    width = {c: max(len(c), *(len(_fmt(r[c])) for r in rows)) for c in cols}
    lines = [title, "  ".join(c.ljust(width[c]) for c in cols), "  ".join("-" * width[c] for c in cols)]
    lines += ["  ".join(_fmt(r[c]).ljust(width[c]) for c in cols) for r in rows]
    return "\n".join(lines)


def _fmt(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) and abs(v) < 10 else f"{v:.0f}" if isinstance(v, float) else str(v)


def write_result(name: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
            "when": time.strftime("%Y-%m-%dT%H:%M:%S"), **data}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def rss_mb(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def rss_tree_mb() -> float:
    """RSS of this process plus its child processes (DataLoader workers). Shared pages count once per process,
    so this overstates the total; what matters here is whether it grows."""
    total, pid = rss_mb(), os.getpid()
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as fh:
            for child in fh.read().split():
                try:
                    total += rss_mb(child)
                except FileNotFoundError:
                    pass
    return total


def ensure_sample(work: Path, images: int) -> Path:
    from shardgen.sources.synthetic import make_sample

    root = work / f"coco-{images}"
    if not (root / "annotations" / "captions_val2014.json").is_file():
        make_sample(root, images=images, val_images=max(1, images // 10), workers=os.cpu_count() or 1, progress=False)
    return root


def ensure_encoder(work: Path, size: str) -> Path:
    from shardgen.text.random_init import init_encoder

    path = work / f"clip-{size}"
    if not (path / "config.json").is_file():
        init_encoder(path, size=size, seed=0)
    return path
