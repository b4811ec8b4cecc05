"""`shardgen download` against a real HTTP server on loopback, and Kaggle with its network layer replaced."""

import hashlib
import io
import json
import os
import zipfile
from pathlib import Path

import pytest

from shardgen.cli.main import main
from shardgen.sources.coco import load_split
from shardgen.sources.download import download_coco, find_kaggle_credentials
from shardgen.errors import UserError
from shardgen.format.coco_folders import find_split

from ...helpers import free_port
from ...netutil import FileServer


def _zip(entries: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return buf.getvalue()


@pytest.fixture(scope="module")
def coco_zips(sample_coco) -> dict[str, bytes]:
    def folder(sub):
        return {f"{sub}/{p.name}": p.read_bytes() for p in sorted((sample_coco / sub).iterdir())}

    return {
        "/annotations/annotations_trainval2014.zip": _zip(folder("annotations")),
        "/zips/train2014.zip": _zip(folder("train2014")),
        "/zips/val2014.zip": _zip(folder("val2014")),
    }


def _md5s(zips):
    names = {"/annotations/annotations_trainval2014.zip": "annotations", "/zips/train2014.zip": "train",
             "/zips/val2014.zip": "val"}
    return {names[k]: hashlib.md5(v).hexdigest() for k, v in zips.items()}


def test_download_resume_extract_build_and_idempotent(tmp_path, coco_zips, tiny_encoder, capsys):
    root = tmp_path / "coco"
    with FileServer(coco_zips) as srv:
        srv.cut_once["/zips/train2014.zip"] = len(coco_zips["/zips/train2014.zip"]) // 3  # connection drops once
        args = ["download", "--root", str(root), "--base-url", srv.url + "/", "--quiet"]
        args += [f"--md5={k}={v}" for k, v in _md5s(coco_zips).items()]
        assert main(args) == 0
        out = capsys.readouterr().out
        ranged = [r for p, r in srv.requests if p == "/zips/train2014.zip" and r]
        assert ranged and 0 < int(ranged[0][6:].rstrip("-")) <= len(coco_zips["/zips/train2014.zip"]) // 3  # resumed
        assert "train: 48 files" in out and "shardgen build --coco-root" in out
        n_requests = len(srv.requests)
        assert main(args) == 0  # everything present: nothing fetched again
        assert "nothing to do" in capsys.readouterr().out and len(srv.requests) == n_requests
    images, _ = load_split(find_split(root, "train"))
    assert len(images) == 48 and not (root / "downloads" / "train2014.zip").exists()
    assert main(["build", "--coco-root", str(root), "--split", "val", "--out", str(tmp_path / "shards"),
                 "--text-encoder", str(tiny_encoder), "--quiet"]) == 0


def test_wrong_checksum_is_rejected(tmp_path, coco_zips):
    with FileServer(coco_zips) as srv:
        with pytest.raises(UserError, match="MD5 .* does not match"):
            download_coco(tmp_path, splits=("val",), base_url=srv.url, md5={"annotations": "0" * 32},
                          progress=False)
    assert not list((tmp_path / "downloads").glob("annotations*"))  # the bad file is not kept


def test_zip_with_escaping_member_is_refused(tmp_path):
    evil = _zip({"annotations/captions_train2014.json": b"{}", "../escaped.txt": b"gotcha"})
    files = {"/annotations/annotations_trainval2014.zip": evil}
    with FileServer(files) as srv:
        with pytest.raises(UserError, match="escapes the target folder"):
            download_coco(tmp_path / "root", splits=(), base_url=srv.url,
                          md5={"annotations": hashlib.md5(evil).hexdigest()}, progress=False)
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "root" / "annotations").exists()


def test_http_error_is_one_line(tmp_path, capsys):
    with FileServer({}) as srv:
        code = main(["download", "--root", str(tmp_path), "--base-url", srv.url, "--splits", "val", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "HTTP 404" in err and len(err.strip().splitlines()) == 1


# -- Kaggle -----------------------------------------------------------------------------------------------------
@pytest.fixture
def kaggle_home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "KAGGLE_CONFIG_DIR", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(var, raising=False)
    return home


def test_kaggle_missing_credentials_says_where(kaggle_home, tmp_path, capsys):
    assert main(["download", "--source", "kaggle", "--root", str(tmp_path / "k")]) == 2
    err = capsys.readouterr().err
    assert "~/.kaggle/kaggle.json" in err and "KAGGLE_USERNAME" in err


def test_kaggle_malformed_and_world_readable(kaggle_home):
    cfg = kaggle_home / ".kaggle" / "kaggle.json"
    cfg.parent.mkdir()
    cfg.write_text("{not json")
    with pytest.raises(UserError, match="malformed"):
        find_kaggle_credentials()
    cfg.write_text(json.dumps({"username": "me", "key": "s3cr3t-key"}))
    os.chmod(cfg, 0o644)
    warnings = []
    assert find_kaggle_credentials(warn=warnings.append) == str(cfg)
    assert "chmod 600" in warnings[0] and "s3cr3t-key" not in warnings[0]


def test_kaggle_env_credentials(kaggle_home, monkeypatch):
    monkeypatch.setenv("KAGGLE_USERNAME", "me")
    monkeypatch.setenv("KAGGLE_KEY", "k")
    assert "environment" in find_kaggle_credentials()


def test_kaggle_download_calls_the_api(kaggle_home, tmp_path, sample_coco, monkeypatch, capsys):
    import shutil

    from kaggle.api.kaggle_api_extended import KaggleApi

    cfg = kaggle_home / ".kaggle" / "kaggle.json"
    cfg.parent.mkdir()
    cfg.write_text(json.dumps({"username": "me", "key": "s3cr3t-key"}))
    os.chmod(cfg, 0o600)
    calls = []

    def fake_download(self, dataset, path=None, force=False, quiet=True, unzip=False, licenses=()):
        calls.append((dataset, unzip))  # the network layer; lay the files out as the Kaggle dataset does
        base = Path(path) / "coco2014"
        shutil.copytree(sample_coco / "val2014", base / "images" / "val2014")
        shutil.copytree(sample_coco / "annotations", base / "annotations")

    monkeypatch.setattr(KaggleApi, "dataset_download_files", fake_download)
    root = tmp_path / "k"
    assert main(["download", "--source", "kaggle", "--root", str(root), "--quiet"]) == 0
    out = capsys.readouterr()
    assert calls == [("jeffaudi/coco-2014-dataset-for-yolov3", True)]
    assert "val: 12 files" in out.out and "s3cr3t-key" not in out.out + out.err
    assert main(["download", "--source", "kaggle", "--root", str(root), "--quiet"]) == 0 and len(calls) == 1


@pytest.mark.parametrize("kind", ["absolute", "symlink"])
def test_zip_with_absolute_or_link_member_is_refused(tmp_path, kind):
    import stat

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("annotations/captions_train2014.json", b"{}")
        if kind == "absolute":
            z.writestr(zipfile.ZipInfo("/etc/shardgen-test"), b"x")
        else:
            info = zipfile.ZipInfo("annotations/link")
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            z.writestr(info, "/etc/passwd")
    data = buf.getvalue()
    with FileServer({"/annotations/annotations_trainval2014.zip": data}) as srv:
        with pytest.raises(UserError, match="refusing member"):
            download_coco(tmp_path / "root", splits=(), base_url=srv.url,
                          md5={"annotations": hashlib.md5(data).hexdigest()}, progress=False)
    assert not (tmp_path / "root" / "annotations").exists()


# -- hostile zips and unreachable hosts ------------------------------------------------------------------------
def _deflated(entries: dict[str, bytes]) -> bytes:
    return _zip(entries, zipfile.ZIP_DEFLATED)


def _served_annotations(data: bytes):
    return FileServer({"/annotations/annotations_trainval2014.zip": data})


def test_zip_bomb_is_refused_before_extraction(tmp_path):
    bomb = _deflated({"annotations/captions_train2014.json": b"{}", "annotations/zeros.bin": bytes(64 << 20)})
    assert len(bomb) < 200_000  # 64 MiB of zeros in a small zip
    with _served_annotations(bomb) as srv, pytest.raises(UserError, match="zeros.bin.*a zip bomb"):
        download_coco(tmp_path / "root", splits=(), base_url=srv.url, md5={"annotations": hashlib.md5(bomb).hexdigest()},
                      progress=False)
    assert not (tmp_path / "root" / "annotations").exists()  # nothing extracted, not even the small member
    assert (tmp_path / "root" / "downloads" / "annotations_trainval2014.zip").is_file()  # kept to inspect


def test_expansion_limit_can_be_passed_in(tmp_path, coco_zips, capsys):
    data = coco_zips["/annotations/annotations_trainval2014.zip"]
    args = ["download", "--root", str(tmp_path / "root"), "--splits", "", "--quiet",
            f"--md5=annotations={hashlib.md5(data).hexdigest()}"]
    with _served_annotations(data) as srv:
        assert main([*args, "--base-url", srv.url, "--max-extract-bytes", "1KiB"]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "--max-extract-bytes" in err and "zip bomb" in err
        assert not (tmp_path / "root" / "annotations").exists()
        assert main([*args, "--base-url", srv.url, "--max-extract-bytes", "10MiB"]) == 0
    assert (tmp_path / "root" / "annotations" / "captions_val2014.json").is_file()


def test_refused_connection_fails_fast_with_a_hint_and_leaves_nothing(tmp_path, capsys):
    import time

    root = tmp_path / "coco"
    t0 = time.perf_counter()
    code = main(["download", "--root", str(root), "--base-url", f"http://127.0.0.1:{free_port()}/", "--quiet"])
    elapsed = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "connection refused" in err and "--base-url" in err and "--source kaggle" in err
    assert elapsed < 5  # no retries with backoff (those took 31 s)
    assert not root.exists()


def test_unresolvable_host_fails_fast(tmp_path, monkeypatch, capsys):
    import socket

    def no_dns(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    root = tmp_path / "coco"
    root.mkdir()  # the user's folder stays; only what the download made goes
    assert main(["download", "--root", str(root), "--splits", "val", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "cannot resolve the host name" in err and "images.cocodataset.org" in err and "--source kaggle" in err
    assert root.is_dir() and not (root / "downloads").exists()
