"""Crafted shards against the loader: every bad sample is a LoaderError naming shard and key (raise) or a counted
skip (skip), manifest counts are checked, absurd image headers are refused before decoding, and workers do not
outlive a killed training process."""

from __future__ import annotations

import io
import json
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from PIL import Image

from loaders import LoaderError, make_loader
from loaders.shape.decode import DecodeError, available_backends, decode_into

from ..helpers import rewrite_member

VICTIM = 3  # the 4th sample of shard 0


def _npy(array) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def _bad_npy_header(data: bytes) -> bytes:
    head_end = data.index(b"}") + 1
    return data[:head_end - 1] + b"(" + data[head_end:]  # "{...(" : a syntax error in the header dict


CRAFTED = {  # name → (member extension, edit of that member's bytes)
    "deep_json": ("json", lambda d: b"[" * 200_000 + b"]" * 200_000),
    "no_captions": ("json", lambda d: json.dumps({**json.loads(d), "captions": []}).encode()),
    "huge_image_id": ("json", lambda d: json.dumps({**json.loads(d), "image_id": 2**70}).encode()),
    "caption_not_text": ("json", lambda d: json.dumps({**json.loads(d), "captions": [42, None]}).encode()),
    "json_not_object": ("json", lambda d: b"[1, 2]"),
    "npy_header_syntax": ("npy", _bad_npy_header),
    "npy_wrong_shape": ("npy", lambda d: _npy(np.zeros((0, 512), np.float16))),
}


def _crafted_copy(train_shards, tmp_path, name: str):
    src = tmp_path / name
    shutil.copytree(train_shards, src)
    shard = src / "train-000000.tar"
    ext, edit = CRAFTED[name]
    keys = []

    def apply(member: str, data: bytes):
        key = member.split(".", 1)[0]
        if key not in keys:
            keys.append(key)
        return edit(data) if member.endswith("." + ext) and keys.index(key) == VICTIM else None

    rewrite_member(shard, apply)
    manifest = json.loads((src / "manifest.json").read_text())
    for s in manifest["shards"]:  # the shard's bytes changed: keep the manifest's size and checksum honest
        if s["name"] == shard.name:
            s["n_bytes"] = shard.stat().st_size
    (src / "manifest.json").write_text(json.dumps(manifest))
    return src, keys[VICTIM]


@pytest.mark.parametrize("name", sorted(CRAFTED))
def test_bad_sample_raises_with_key_or_is_skipped(train_shards, tmp_path, name):
    src, key = _crafted_copy(train_shards, tmp_path, name)
    with pytest.raises(LoaderError, match=f"train-000000.tar: {key}"):
        list(make_loader(str(src), batch_size=8, shuffle=False))
    batches = list(make_loader(str(src), batch_size=8, shuffle=False, on_error="skip"))
    keys = [k for b in batches for k in b["key"]]
    assert len(keys) == 48 and key not in keys  # batches stay full; the bad sample never appears


def test_bad_sample_under_workers(train_shards, tmp_path):
    src, key = _crafted_copy(train_shards, tmp_path, "deep_json")
    loader = make_loader(str(src), batch_size=4, num_workers=2, shuffle=False)
    with pytest.raises(LoaderError, match=key):  # the worker's LoaderError, as itself
        list(loader)
    loader.close()
    skipping = make_loader(str(src), batch_size=4, num_workers=2, shuffle=False, on_error="skip")
    assert sum(len(b["key"]) for b in skipping) == 48
    skipping.close()


@pytest.mark.parametrize("delta, message", [(1, "shard ends after 10 samples"), (-1, "more samples than the 9")])
def test_manifest_counts_are_checked(train_shards, tmp_path, delta, message):
    src = tmp_path / "counts"
    shutil.copytree(train_shards, src)
    manifest = json.loads((src / "manifest.json").read_text())
    manifest["shards"][0]["n_samples"] += delta
    (src / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(LoaderError, match=message):
        list(make_loader(str(src), batch_size=4, shuffle=False))


@pytest.mark.parametrize("backend", available_backends())
def test_absurd_image_header_is_refused_before_decoding(backend):
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    sof = data.find(b"\xff\xc0")
    data[sof + 5:sof + 9] = (20000).to_bytes(2, "big") * 2  # the frame header now claims 20000×20000
    with pytest.raises(DecodeError, match="20000|400000000 pixels"):  # ours, or PIL refusing at open
        decode_into(bytes(data), np.empty((224, 224, 3), np.uint8), backend=backend)


@pytest.mark.slow
def test_workers_exit_when_the_training_process_is_killed(train_shards, tmp_path):
    script = textwrap.dedent(f"""
        import multiprocessing, sys, time
        from loaders import make_loader
        loader = make_loader({str(train_shards)!r}, batch_size=4, num_workers=2)
        next(iter(loader))
        print(" ".join(str(p.pid) for p in multiprocessing.active_children()), flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    pids = [int(p) for p in proc.stdout.readline().split()]
    assert len(pids) == 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 15
    alive = pids
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [p for p in pids if _running(p)]
    assert not alive, f"workers {alive} outlived their parent"


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False
