"""Shards to a real S3 API (moto on loopback) and back, and streaming over HTTP with a dropped connection."""

import shutil
import socket

import pytest
import torch

from loaders import LoaderError, SourceError, make_loader
from shardgen.cli.main import main
from shardgen.errors import UserError
from shardgen.publish.upload import upload
from shardgen.publish.verify import verify

from ..helpers import free_port, moto_s3
from ..netutil import FileServer



@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with moto_s3("shards") as client:
        yield client


def _keys_images(loader):
    out = []
    for b in loader:
        out += list(zip(b["key"], b["image"], b["text_embedding"]))
    return out


def _same(a, b):
    assert [k for k, _, _ in a] == [k for k, _, _ in b]
    assert all(torch.equal(x, y) and torch.equal(e, f) for (_, x, e), (_, y, f) in zip(a, b))


def test_upload_interrupt_resume_verify_and_stream(s3, train_shards, monkeypatch, capsys):
    import s3fs

    sent, order = [], []
    real_put = s3fs.S3FileSystem._put_file  # patch the async method s3fs defines itself (restores cleanly)

    async def dying_put(self, lpath, rpath, *args, **kwargs):
        if len(sent) == 2:
            raise ConnectionResetError("network dropped")
        sent.append(rpath.rsplit("/", 1)[-1])
        return await real_put(self, lpath, rpath, *args, **kwargs)

    def patch(fn):  # cached s3fs instances bind their sync wrappers at creation: drop them with each patch
        monkeypatch.setattr(s3fs.S3FileSystem, "_put_file", fn)
        s3fs.S3FileSystem.clear_instance_cache()

    patch(dying_put)
    with pytest.raises(UserError, match="s3://shards/coco/train"):
        upload(train_shards, "s3://shards/coco/train", workers=1, progress=False)
    listed = {o["Key"] for o in s3.list_objects_v2(Bucket="shards").get("Contents", [])}
    assert "coco/train/manifest.json" not in listed  # the index never precedes its shards

    async def recording_put(self, lpath, rpath, *args, **kwargs):
        order.append(rpath.rsplit("/", 1)[-1])
        return await real_put(self, lpath, rpath, *args, **kwargs)

    patch(recording_put)
    report = upload(train_shards, "s3://shards/coco/train", workers=2, progress=False)
    assert sorted(report.skipped) == sorted(sent)  # only the missing shards were sent again
    tars_and_indexes = [name for name in order if not name.endswith(".idx")]  # each shard's DALI index rides along
    assert tars_and_indexes[-3:] == ["sizes.json", "shardindex.json", "manifest.json"] and len(tars_and_indexes) == 3 + 5 - 2
    patch(real_put)

    assert main(["verify", "s3://shards/coco/train", "--quiet"]) == 0
    remote = make_loader("s3://shards/coco/train/", batch_size=8, shuffle=False)
    local = make_loader(str(train_shards), batch_size=8, shuffle=False)
    _same(_keys_images(remote), _keys_images(local))
    workers = make_loader("s3://shards/coco/train", batch_size=4, num_workers=2, seed=3)
    assert sorted(k for k, _, _ in _keys_images(workers)) == sorted(k for k, _, _ in _keys_images(local))


def test_refused_uploads_and_builds_leave_the_s3_copy_readable(s3, tmp_path, train_shards, sample_coco,
                                                               tiny_encoder, capsys):
    """Checks come before the old indexes are removed: a shard edited after its build, another split."""
    upload(train_shards, "s3://shards/keep/train", progress=False)
    before = s3.get_object(Bucket="shards", Key="keep/train/manifest.json")["Body"].read()
    edited = tmp_path / "edited"
    shutil.copytree(train_shards, edited)
    with open(edited / "train-000002.tar", "r+b") as fh:
        fh.seek(3000)
        fh.write(b"X")
    assert main(["upload", str(edited), "s3://shards/keep/train", "--quiet"]) == 2
    assert "sha256 differs" in capsys.readouterr().err
    assert main(["build", "--coco-root", str(sample_coco), "--split", "val", "--out", "s3://shards/keep/train",
                 "--staging", str(tmp_path / "stage"), "--text-encoder", str(tiny_encoder), "--quiet"]) == 2
    assert "holds another dataset, a train set of 48 samples" in capsys.readouterr().err
    assert s3.get_object(Bucket="shards", Key="keep/train/manifest.json")["Body"].read() == before
    assert main(["verify", "s3://shards/keep/train", "--quiet"]) == 0


def test_missing_bucket_is_a_clear_error(s3, train_shards, capsys):
    assert main(["upload", str(train_shards), "s3://no-such-bucket/x", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "s3://no-such-bucket/x" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SourceError, match="no-such-bucket"):
        make_loader("s3://no-such-bucket/x/", batch_size=4)


def test_stream_over_http_with_a_dropped_connection(train_shards):
    with FileServer(root=train_shards.parent) as srv:
        base = f"{srv.url}/{train_shards.name}/"
        srv.cut_once[f"/{train_shards.name}/train-000001.tar"] = 150_000
        remote = make_loader(base, batch_size=8, shuffle=False, retry_backoff=0.01)
        local = make_loader(str(train_shards), batch_size=8, shuffle=False)
        _same(_keys_images(remote), _keys_images(local))
        assert sum(1 for p, _ in srv.requests if p.endswith("train-000001.tar")) >= 2  # reopened after the cut
        assert main(["verify", base, "--quiet"]) == 0


def test_http_missing_shard_names_the_url(tmp_path, train_shards):
    import shutil

    d = tmp_path / "srv" / "t"
    shutil.copytree(train_shards, d)
    (d / "train-000003.tar").unlink()
    with FileServer(root=tmp_path / "srv") as srv:
        loader = make_loader(f"{srv.url}/t/", batch_size=8, shuffle=False, retries=1, retry_backoff=0.01)
        with pytest.raises(LoaderError, match=r"t/train-000003\.tar"):
            list(loader)


def test_bad_credentials_are_a_clear_error(tmp_path, train_shards, monkeypatch, capsys):
    """A second moto server with authentication on: unknown keys are refused like real S3 refuses them."""
    import os
    import subprocess
    import sys
    import time

    import s3fs

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            env=dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="0"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        for k, v in {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "wrong",
                     "AWS_SECRET_ACCESS_KEY": "wrong", "AWS_DEFAULT_REGION": "us-east-1"}.items():
            monkeypatch.setenv(k, v)
        s3fs.S3FileSystem.clear_instance_cache()
        assert main(["upload", str(train_shards), "s3://bucket/x", "--quiet"]) == 2
        err = capsys.readouterr().err
        assert "access denied" in err and "s3://bucket/x" in err and len(err.strip().splitlines()) == 1
        with pytest.raises(SourceError, match="access denied"):
            make_loader("s3://bucket/x/", batch_size=4)
        with pytest.raises(UserError, match=r"s3://bucket/x/manifest\.json: access denied"):
            verify("s3://bucket/x")
        assert main(["verify", "s3://bucket/x", "--quiet"]) == 2
        err = capsys.readouterr().err
        assert "access denied" in err and len(err.strip().splitlines()) == 1
    finally:
        proc.terminate()
        proc.wait()
        s3fs.S3FileSystem.clear_instance_cache()


def test_build_straight_to_s3(s3, tmp_path, sample_coco, tiny_encoder, capsys, monkeypatch):
    import s3fs

    s3.put_object(Bucket="shards", Key="built/val/manifest.json", Body=b"{}")  # an old build's: must go first
    open_file, seen = s3fs.S3FileSystem._open, []

    def watched_open(self, path, mode="rb", **kwargs):  # the shard tasks write their shards to the store
        if "w" in mode and path.endswith(".tar"):
            seen.append(s3.list_objects_v2(Bucket="shards", Prefix="built/val/manifest.json")["KeyCount"])
        return open_file(self, path, mode, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "_open", watched_open)
    code = main(["build", "--coco-root", str(sample_coco), "--split", "val", "--out", "s3://shards/built/val",
                 "--staging", str(tmp_path / "stage"), "--text-encoder", str(tiny_encoder), "--samples-per-shard",
                 "5", "--quiet", "--workers", "1"])
    assert code == 0 and "written to s3://shards/built/val: 3 shards" in capsys.readouterr().out
    assert seen and seen[0] == 0  # the first shard went up with the old manifest already removed
    assert not list((tmp_path / "stage").glob("*.tar"))  # no shard staged on the driver's disk
    keys = [k for k, _, _ in _keys_images(make_loader("s3://shards/built/val/", batch_size=4, shuffle=False))]
    assert len(keys) == 12 and main(["verify", "s3://shards/built/val", "--quiet"]) == 0
