"""Webdataset input (issue 22): shards in img2dataset's layout (`000000012.jpg`, `.txt`, `.json` per sample, made
here from the sample's images) are re-sharded into our format with caption embeddings, every sample with an image
and a caption kept (counts equal), the rest counted; a tar that is not one is one line (exit 2)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from shardgen.cli.main import main

from ..helpers import read_all


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def img2dataset_dir(sample_coco, tmp_path_factory) -> Path:
    """Two tars of img2dataset's output from the 12 val images: keys 000000000..., jpg + txt + json each; in the
    second tar one sample lacks its txt and one its jpg (both counted, not kept)."""
    out = tmp_path_factory.mktemp("img2dataset")
    images = sorted((sample_coco / "val2014").iterdir())
    for shard in range(2):
        with tarfile.open(out / f"{shard:05d}.tar", "w") as tar:
            for i in range(6):
                n = shard * 6 + i
                key = f"{shard:05d}{i:04d}"
                if not (shard == 1 and i == 5):
                    _add(tar, f"{key}.jpg", images[n].read_bytes())
                if not (shard == 1 and i == 4):
                    _add(tar, f"{key}.txt", f"a photo number {n}".encode())
                _add(tar, f"{key}.json", json.dumps({"key": key, "caption": f"a photo number {n}"}).encode())
        (out / f"{shard:05d}_stats.json").write_text("{}")
    return out


def test_img2dataset_shards_are_resharded_with_embeddings_counts_equal(img2dataset_dir, tiny_encoder, tmp_path,
                                                                       capsys):
    argv = ["build", "--webdataset", str(img2dataset_dir / "{00000..00001}.tar"), "--out", str(tmp_path / "o"),
            "--text-encoder", str(tiny_encoder), "--samples-per-shard", "4", "--quiet", "--workers", "1"]
    assert main(argv) == 0, capsys.readouterr().err
    samples = read_all(tmp_path / "o")
    assert len(samples) == 10  # 12 samples, one without a caption, one without an image
    assert [k for k, _ in samples] == sorted(f"{s:05d}{i:04d}".zfill(12) for s in range(2) for i in range(6)
                                             if (s, i) not in ((1, 4), (1, 5)))
    for key, s in samples:
        n = int(key[-9:-4]) * 6 + int(key[-4:])
        assert s["meta"]["captions"] == [f"a photo number {n}"] and s["npy"].shape == (1, 512)
        assert s["jpg"][:2] == b"\xff\xd8"
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["split"] == "all" and manifest["source"]["samples"] == 12
    assert manifest["failures"]["no_captions"]["count"] == 1 and manifest["failures"]["missing_file"]["count"] == 1


def test_a_file_that_is_not_a_tar_is_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "00000.tar").write_bytes(b"not a tar at all" * 100)
    assert main(["build", "--webdataset", str(tmp_path / "00000.tar"), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a readable tar" in err, err
