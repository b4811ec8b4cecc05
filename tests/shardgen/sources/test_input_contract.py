"""The input contract (issue 31): a new kind of input is one module defining `SPECS` plus one line in the
registry (`sources.inputs.MODULES`, naming the module and its options). Here a folder of image + .txt pairs, a
module kept outside the package, is built through `shardgen build --pairs DIR` with nothing else changed."""

from __future__ import annotations

import json
import sys
import textwrap

from shardgen.cli.main import main
from shardgen.sources import inputs

from ...helpers import read_all

PAIRS_MODULE = '''
from pathlib import Path

from shardgen.sources.coco import CaptionReport
from shardgen.sources.record import ImageRecord
from shardgen.sources.inputs import InputSpec, Loaded, value


def _load(cfg):
    folder = Path(value(cfg, "pairs"))
    report, records = CaptionReport(), []
    for i, image in enumerate(sorted(folder.glob("*.jpg"))):
        text = image.with_suffix(".txt").read_text().strip()
        if text:
            records.append(ImageRecord(image_id=i, file_name=image.name, path=image, captions=(text,)))
        else:
            report.problems["empty_caption"].append(image.name)
    return Loaded(records, report, {"dataset": "pairs"}, folder, str(folder), "pairs", str(folder), [])


SPECS = [InputSpec("pairs", ("pairs",), lambda cfg: None, lambda cfg: cfg.split or "pairs", _load)]
'''


def test_a_new_kind_of_input_is_one_module_and_one_registry_line(tmp_path, sample_coco, tiny_encoder, monkeypatch,
                                                                  capsys):
    (tmp_path / "code" / "labsources").mkdir(parents=True)
    (tmp_path / "code" / "labsources" / "__init__.py").write_text("")
    (tmp_path / "code" / "labsources" / "pairs.py").write_text(textwrap.dedent(PAIRS_MODULE))  # the one module
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    monkeypatch.setitem(inputs.MODULES, "labsources.pairs",  # the one registry line
                        (inputs.Option("--pairs", "a folder of image + .txt pairs", "DIR"),))
    folder = tmp_path / "pairs"
    folder.mkdir()
    images = sorted((sample_coco / "val2014").iterdir())[:5]
    for i, image in enumerate(images):
        (folder / image.name).write_bytes(image.read_bytes())
        (folder / image.name).with_suffix(".txt").write_text(f"pair number {i}" if i != 3 else " ")
    out = tmp_path / "out"
    assert main(["build", "--pairs", str(folder), "--out", str(out), "--text-encoder", str(tiny_encoder),
                 "--quiet", "--workers", "1"]) == 0, capsys.readouterr().err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["split"] == "pairs" and manifest["provenance"]["input"]["kind"] == "pairs"
    assert manifest["failures"]["empty_caption"]["files"] == [images[3].name]
    got = [s["meta"]["captions"] for _, s in read_all(out)]
    assert got == [["pair number 0"], ["pair number 1"], ["pair number 2"], ["pair number 4"]]
    assert "labsources.pairs" in sys.modules
