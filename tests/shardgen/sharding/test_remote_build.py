"""A build whose input and output are both on an object store (issue 28, against moto's real S3 API on loopback):
`--karpathy s3://… --image-root s3://… --out s3://…` writes the same tars as the local build, the shard tasks put
them in the bucket themselves, and the driver's work folder holds the journal and caption cache, no shard."""

from __future__ import annotations

import hashlib
import json

import pytest

from shardgen.cli.main import main

from ...helpers import moto_s3
from ..sources.test_table import flickr_file


@pytest.mark.slow
def test_karpathy_images_and_out_on_s3_give_the_local_tars_and_no_local_shard(sample_coco, tiny_encoder, tmp_path,
                                                                              capsys, monkeypatch):
    split_file = flickr_file(sample_coco, tmp_path / "dataset_flickr30k.json")
    common = ["--split", "train", "--text-encoder", str(tiny_encoder), "--samples-per-shard", "2", "--quiet",
              "--workers", "2"]
    local = tmp_path / "local"
    assert main(["build", "--karpathy", str(split_file), "--image-root", str(sample_coco / "val2014"),
                 "--out", str(local), *common]) == 0
    with moto_s3("lab") as client:
        for path in (sample_coco / "val2014").iterdir():
            client.upload_file(str(path), "lab", f"flickr30k-images/{path.name}")
        client.upload_file(str(split_file), "lab", "dataset_flickr30k.json")
        monkeypatch.chdir(tmp_path)
        assert main(["build", "--karpathy", "s3://lab/dataset_flickr30k.json", "--image-root",
                     "s3://lab/flickr30k-images", "--out", "s3://lab/shards/train", "--staging", "work",
                     *common]) == 0, capsys.readouterr().err
        listed = client.list_objects_v2(Bucket="lab", Prefix="shards/train/")["Contents"]
        remote = {o["Key"].rsplit("/", 1)[-1]: hashlib.sha256(
            client.get_object(Bucket="lab", Key=o["Key"])["Body"].read()).hexdigest() for o in listed}
    tars = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in local.glob("*.tar")}
    assert len(tars) == 3 and {k: v for k, v in remote.items() if k.endswith(".tar")} == tars
    assert {k for k in remote if k.endswith(".idx")} == {k.replace(".tar", ".idx") for k in tars}
    assert "manifest.json" in remote and not any(".part." in k for k in remote)
    work = sorted(p.name for p in (tmp_path / "work").iterdir())
    assert not [n for n in work if n.endswith((".tar", ".idx"))], work  # the driver's disk holds no shard
    manifest = json.loads((local / "manifest.json").read_text())
    assert manifest["provenance"]["input"]["kind"] == "karpathy"
    assert manifest["provenance"]["input"]["index_files"]["dataset_flickr30k.json"] == \
        hashlib.sha256(split_file.read_bytes()).hexdigest()
