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
