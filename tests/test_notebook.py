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


def _cell(marker: str) -> str:
    """The source of the code cell holding `marker`."""
    nb = json.loads(NOTEBOOK.read_text())
    return next(src for c in nb["cells"] if c["cell_type"] == "code" and marker in (src := "".join(c["source"])))


def _config_cell(**values) -> str:
    """The configuration cell (the first code cell) with `values` set in place of its Nones."""
    source = _cell("COCO_ROOT = None")
    for name, value in values.items():
        assert f"{name} = None" in source, name
        source = source.replace(f"{name} = None", f"{name} = {value!r}", 1)
    return source


def _setup_cell(**values) -> str:
    return _config_cell(**values) + "\n" + _cell("def _clone_root")


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
    assert ran == [[sys.executable, "-m", "pip", "install", "--quiet", "-e", f"{root}[encoder-init,fast]"]]
    ran.clear()
    exec(_setup_cell(WEBDATASET_URLS="s3://bucket/cc3m/{00000..00009}.tar"), {})  # a URL: its filesystem too
    assert ran == [[sys.executable, "-m", "pip", "install", "--quiet", "-e", f"{root}[encoder-init,fast,s3]"]]
    ran.clear()
    monkeypatch.chdir(tmp_path)  # a fresh Colab runtime: no clone around, REPOSITORY not set
    with pytest.raises(RuntimeError, match="set REPOSITORY above"):
        exec(_setup_cell(), {})
    assert ran == []


def test_the_setup_cell_installs_a_missing_extra_next_to_an_importable_toolkit(monkeypatch, tmp_path):
    import importlib.util
    import subprocess
    import sys

    real, ran = importlib.util.find_spec, []
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "simplejpeg" else real(name, *a))
    monkeypatch.setattr(subprocess, "run", lambda cmd, **k: ran.append(cmd))
    monkeypatch.chdir(tmp_path)
    exec(_setup_cell(), {})
    assert ran == [[sys.executable, "-m", "pip", "install", "--quiet", "simplejpeg>=1.7"]]


def _settings(monkeypatch, cpus: int, **values) -> dict:
    """The configuration and settings cells run with `values` on a machine of `cpus` CPUs."""
    import os

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus)), raising=False)
    names: dict = {}
    exec(_config_cell(**values) + "\n" + _cell("SAMPLE = SOURCE"), names)
    return names


def test_the_configuration_cell_takes_each_input_kind_and_sizes_workers_from_the_cpus(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert _settings(monkeypatch, 2)["LOADER"]["num_workers"] == 0  # the sample: in the notebook's process
    coco = _settings(monkeypatch, 2, COCO_ROOT="data/coco2014")
    assert coco["LOADER"]["num_workers"] == 1 and set(coco["SPLITS"]) == {"train", "val"}  # Colab's 2 vCPUs
    assert _settings(monkeypatch, 16, COCO_ROOT="data/coco2014")["LOADER"]["num_workers"] == 8
    flickr = _settings(monkeypatch, 4, FLICKR_SPLIT_FILE="dataset_flickr30k.json", FLICKR_IMAGE_ROOT="f30k-images")
    assert flickr["SPLITS"]["test"]["split"] == "test" and flickr["SPLITS"]["train"]["image_root"] == "f30k-images"
    assert (flickr["TRAIN_SPLIT"], flickr["VAL_SPLIT"]) == ("train", "test")
    table = _settings(monkeypatch, 4, CAPTIONS_TABLE="captions.csv", TABLE_IMAGE_ROOT="photos")
    assert table["SPLITS"]["all"]["captions"] == "captions.csv"
    web = _settings(monkeypatch, 4, WEBDATASET_URLS="s3://bucket/{0..9}.tar")
    assert web["SPLITS"]["all"]["webdataset"] == "s3://bucket/{0..9}.tar"
    for values, match in (({"COCO_ROOT": "a", "CAPTIONS_TABLE": "b"}, "set one data source"),
                          ({"FLICKR_SPLIT_FILE": "dataset_flickr30k.json"}, "needs FLICKR_IMAGE_ROOT")):
        with pytest.raises(ValueError, match=match):
            exec(_config_cell(**values), {})
