"""The quickstart notebook runs as shipped (embedded sample, offline, CPU), so it cannot rot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "coco_clip_quickstart.ipynb"


def test_the_notebook_is_stored_without_outputs():
    nb = json.loads(NOTEBOOK.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(not c["outputs"] and c["execution_count"] is None for c in code)
    assert sum("COCO_ROOT = None" in "".join(c["source"]) for c in code) == 1  # the one variable to change


@pytest.mark.slow
def test_the_quickstart_notebook_runs_on_the_embedded_sample(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")

    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()  # raises on a failing cell
    text = "\n".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs)
    run = tmp_path / "quickstart_out" / "run"
    assert "8 steps, last loss" in text and "text → image" in text
    assert json.loads((run / "params.json").read_text())["total_steps"] == 8
    assert (run / "curves.png").stat().st_size > 1000
    for picture in ("text_to_image", "image_to_text", "unseen_images"):  # named by the val shards they show
        assert len(list(run.glob(f"{picture}-val-*.png"))) == 1, picture
    images = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs
              if "image/png" in out.get("data", {})]
    assert len(images) == 5  # grid, curves, three retrieval pictures
    assert "warning" not in text.lower() and "IProgress" not in text  # tqdm's widget warning among them
    assert "pip install" not in text  # the toolkit was importable: the setup cell installed nothing


def _setup_cell() -> str:
    nb = json.loads(NOTEBOOK.read_text())
    return "".join(next(c for c in nb["cells"] if c["cell_type"] == "code")["source"])


def test_the_setup_cell_installs_nothing_when_the_toolkit_is_importable(monkeypatch, tmp_path):
    import subprocess

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail(f"ran {a}"))
    exec(_setup_cell(), {})


def test_the_setup_cell_installs_a_clone_editable_and_asks_for_the_repository_elsewhere(monkeypatch, tmp_path):
    import importlib.util
    import subprocess
    import sys

    real, ran = importlib.util.find_spec, []

    def find_spec(name, *args):  # "not installed" until pip has run
        return None if name == "shardgen" and not ran else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    monkeypatch.setattr(subprocess, "run", lambda cmd, **k: ran.append(cmd))
    monkeypatch.setattr(sys, "path", list(sys.path))
    root = NOTEBOOK.parents[1]
    monkeypatch.chdir(root / "examples")  # the notebook in a clone
    exec(_setup_cell(), {})
    assert ran == [[sys.executable, "-m", "pip", "install", "--quiet", "-e", f"{root}[encoder-init]"]]
    ran.clear()
    monkeypatch.chdir(tmp_path)  # a fresh Colab runtime: no clone around, REPOSITORY not set
    with pytest.raises(RuntimeError, match="set REPOSITORY above"):
        exec(_setup_cell(), {})
    assert ran == []
