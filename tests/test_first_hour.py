"""What a new user meets in the first hour (issue 14), where no package test holds it: the README (a landing page
whose loader snippet runs on a CPU box, whose links resolve, with no stale figures), `make demo` installing less than
`make test`, and pictures that keep their aspect ratio."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_the_readme_loader_snippet_runs_on_a_cpu_box(train_shards, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    snippet = next(b for b in _python_blocks(README) if "make_loader(" in b)
    assert '"shards/train"' in snippet and "DeviceLoader(loader, device)" in snippet
    scope: dict = {}
    code = compile(snippet.replace('"shards/train"', repr(str(train_shards))), "README.md", "exec")
    exec(code, scope)  # noqa: S102 - the README's own snippet, run as a reader would
    assert scope["images"].dtype == torch.float32 and scope["images"].device.type == "cpu"
    assert scope["text_embeddings"].shape[1] == 512 and len(scope["captions"]) == len(scope["image_ids"])


def test_the_readme_is_a_landing_page():
    assert len(README) < 9000  # read in five minutes; specs and figures live in docs/
    for needle in ("make demo", "make test", "source .venv/bin/activate", ".venv/bin/shardgen",
                   "shardgen download", "shardgen build", "shardgen verify", "shardgen upload",
                   "python -m models.train", "python -m models.evaluate", "examples/coco_clip_quickstart.ipynb"):
        assert needle in README, needle
    from shardgen.sources.download import KAGGLE_DATASET

    assert KAGGLE_DATASET in README  # the Kaggle dataset the download uses is named
    for stale in ("P2", "0.85 goal", "No GPU was available", "~2 minutes"):
        assert stale not in README, stale


def test_every_relative_link_in_the_docs_resolves():
    pages = [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for page in pages:
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" not in target:
                assert (page.parent / target).exists(), f"{page.relative_to(ROOT)}: {target}"


def test_every_benchmark_figure_in_the_docs_is_in_the_results():
    """The loader and build tables quote the committed results files (rounded), not older runs."""
    import json

    doc = (ROOT / "docs" / "benchmarks.md").read_text()
    for name, key in (("loader", "img/s"), ("build", "img/s"), ("encode", "captions/s")):
        for row in json.loads((ROOT / "benchmarks" / "results" / f"{name}.json").read_text())["rows"]:
            assert f"| {row[key]:.0f} |" in doc or f"| {row[key]:.1f} |" in doc or \
                f"**{row[key]:.0f}**" in doc, (name, row)


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_demo_installs_what_the_demo_needs_and_make_test_adds_the_test_extras(tmp_path):
    def planned(target: str) -> str:  # what make would run on a fresh clone, without running it
        done = subprocess.run(["make", "-n", target, f"VENV={tmp_path / 'venv'}"], cwd=ROOT, capture_output=True,
                              text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout

    demo, test = planned("demo"), planned("test")
    def installs(plan: str) -> list[str]:
        return re.findall(r"pip install -e '\.\[([^\]]*)\]'", plan)

    assert installs(demo) and all("test" not in extras.split(",") for extras in installs(demo))
    assert any("test" in extras.split(",") for extras in installs(test))
    assert "scripts/demo.py" in demo and "pytest" in test
    for plan in (demo, test):  # a line per install stage, pip's package lines shown
        assert "[3/4] torch" in plan and "Collecting" in plan


def _box_of(img: Image.Image, color: tuple[int, int, int]) -> tuple[int, int]:
    """Width and height of the part of `img` painted in `color` (the picture, not the bars around it)."""
    pixels = np.asarray(img.convert("RGB")).astype(int)
    ys, xs = np.nonzero(np.abs(pixels - np.array(color)).sum(axis=2) < 40)
    return xs.max() - xs.min() + 1, ys.max() - ys.min() + 1


@pytest.mark.parametrize("size", [(300, 150), (120, 360)])
def test_show_grids_keep_the_aspect_ratio(size):
    from shardgen.publish.show import CELL, PAD, render_grid

    grid = render_grid([(Image.new("RGB", size, (200, 0, 0)), "a red block")], columns=1)
    w, h = _box_of(grid.crop((PAD, PAD, PAD + CELL, PAD + CELL)), (200, 0, 0))
    assert max(w, h) == CELL and w / h == pytest.approx(size[0] / size[1], rel=0.03)


def test_retrieval_pictures_keep_the_aspect_ratio():
    from models.runs.plots import LABEL_W, PAD, THUMB, retrieval_grid

    photo = Image.new("RGB", (640, 480), (0, 0, 200))  # a COCO-sized photo, 4:3
    picture = retrieval_grid([(photo, [(photo, 0.5)])])
    for x in (PAD, LABEL_W):
        w, h = _box_of(picture.crop((x, PAD, x + THUMB, PAD + THUMB)), (0, 0, 200))
        assert w == THUMB and w / h == pytest.approx(640 / 480, rel=0.03)  # squashed, it would be 128 × 128
