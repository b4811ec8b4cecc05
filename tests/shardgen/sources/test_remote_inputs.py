"""Inputs through fsspec (issue 22) against a real S3 API (moto on loopback): a COCO root and an image-caption table
on S3 build the same shard bytes as from the local copy; a bucket that does not exist is one line (exit 2)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from shardgen.sharding.pipeline import BuildConfig, build_shards
from shardgen.cli.main import main
from shardgen.errors import UserError

from ...helpers import moto_s3
from .test_table import write_table
from .test_webdataset import img2dataset_dir  # noqa: F401 - the fixture, shared


@pytest.fixture(scope="module")
def bucket(sample_coco):
    """A moto S3 server holding the sample's val split (images and annotations) under s3://inputs/coco2014."""
    with moto_s3("inputs") as client:
        for path in [*(sample_coco / "val2014").iterdir(), *(sample_coco / "annotations").glob("captions_val2014.json")]:
            client.upload_file(str(path), "inputs", f"coco2014/{path.relative_to(sample_coco).as_posix()}")
        yield client


def _tars(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.glob("*.tar"))}


def _cfg(out: Path, encoder: Path, **kw) -> BuildConfig:
    return BuildConfig(out=out, text_encoder=str(encoder), samples_per_shard=5, workers=1, progress=False, **kw)


@pytest.mark.slow
def test_a_coco_root_on_s3_builds_the_same_bytes_as_the_local_copy(bucket, sample_coco, tiny_encoder, tmp_path):
    build_shards(_cfg(tmp_path / "local", tiny_encoder, coco_root=sample_coco, split="val"))
    build_shards(_cfg(tmp_path / "s3", tiny_encoder, coco_root="s3://inputs/coco2014", split="val"))
    local = _tars(tmp_path / "local")
    assert _tars(tmp_path / "s3") == local and len(local) == 3
    s3, here = (json.loads((tmp_path / d / "manifest.json").read_text()) for d in ("s3", "local"))
    assert s3["provenance"].pop("input") == {"kind": "coco", "location": "s3://inputs/coco2014", "index_files": {
        "captions_val2014.json": here["provenance"]["input"]["index_files"]["captions_val2014.json"]}}
    here["provenance"].pop("input")
    assert s3 == here  # the same shards, counts and settings; only where the input was differs


def test_a_table_and_its_images_on_s3_build_the_same_bytes_as_local(bucket, sample_coco, tiny_encoder, tmp_path):
    names = sorted(p.name for p in (sample_coco / "val2014").iterdir())
    rows = [{"image": f"val2014/{n}", "caption": f"photo {i} of the sample"} for i, n in enumerate(names)]
    table = write_table(rows, tmp_path / "t.parquet")
    bucket.upload_file(str(table), "inputs", "tables/t.parquet")
    build_shards(_cfg(tmp_path / "local", tiny_encoder, coco_root=None, split=None, captions=table,
                      image_root=sample_coco))
    build_shards(_cfg(tmp_path / "s3", tiny_encoder, coco_root=None, split=None,
                      captions="s3://inputs/tables/t.parquet", image_root="s3://inputs/coco2014"))
    assert _tars(tmp_path / "s3") == _tars(tmp_path / "local") and len(_tars(tmp_path / "local")) == 3


@pytest.mark.parametrize("option", ["--coco-root", "--captions"])
def test_a_bucket_that_does_not_exist_is_one_line_exit_2(bucket, tmp_path, capsys, option):
    where = {"--coco-root": ["--coco-root", "s3://no-such-bucket/coco", "--split", "val"],
             "--captions": ["--captions", "s3://no-such-bucket/t.csv", "--image-root", "s3://inputs/coco2014"]}
    assert main(["build", *where[option], "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err and "s3://no-such-bucket" in err, err


def test_webdataset_tars_on_s3_build_the_same_bytes_as_local(bucket, img2dataset_dir, tiny_encoder, tmp_path):
    for tar in sorted(img2dataset_dir.glob("*.tar")):
        bucket.upload_file(str(tar), "inputs", f"wds/{tar.name}")
    build_shards(_cfg(tmp_path / "local", tiny_encoder, coco_root=None, split=None,
                      webdataset=str(img2dataset_dir / "{00000..00001}.tar")))
    build_shards(_cfg(tmp_path / "s3", tiny_encoder, coco_root=None, split=None,
                      webdataset="s3://inputs/wds/{00000..00001}.tar"))
    assert _tars(tmp_path / "s3") == _tars(tmp_path / "local") and len(_tars(tmp_path / "local")) == 2


def test_a_remote_image_read_is_retried_with_backoff_then_raises(monkeypatch):
    from shardgen.sharding import images
    from shardgen.sources import roots

    calls, waits = [], []

    def flaky(url, **_):
        calls.append(url)
        if len(calls) < 3:
            raise ConnectionError(f"{url}: connection reset")
        return b"bytes"

    monkeypatch.setattr(roots, "read_bytes", flaky)
    assert images.read_image_bytes("s3://inputs/x.jpg", sleep=waits.append) == b"bytes"
    assert len(calls) == 3 and waits == [1.0, 2.0]

    def down(url, **_):
        raise ConnectionError(f"{url}: connection refused")

    monkeypatch.setattr(roots, "read_bytes", down)
    with pytest.raises(UserError, match=r"s3://inputs/x\.jpg: unreadable after 3 tries \(ConnectionError: .*"
                                        r"connection refused\).*rerun the same command to resume"):
        images.read_image_bytes("s3://inputs/x.jpg", sleep=waits.append)  # one line, not a traceback
    assert waits == [1.0, 2.0, 1.0, 2.0]  # three tries, two waits, then the error stops the build


def test_a_missing_remote_image_is_counted_not_retried(monkeypatch):
    from shardgen.sharding import images
    from shardgen.sources import roots
    from shardgen.errors import BadImage

    def missing(url, **_):
        raise FileNotFoundError(f"{url}: not found")

    monkeypatch.setattr(roots, "read_bytes", missing)
    with pytest.raises(BadImage) as caught:
        images.read_image_bytes("s3://inputs/x.jpg", sleep=pytest.fail)
    assert caught.value.reason == "missing_file"
