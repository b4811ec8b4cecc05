"""`--executor ray` (issue 22) on one local 2-CPU Ray shared by this module: the same shard bytes as the local build
with a Ray worker killed mid-shard (its task is retried), a rerun skips finished shards, caption chunks encoded as
Ray tasks equal the local encoding, a task's error comes back as itself, and an unreachable --ray-address is one
line (exit 2)."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from shardgen.sharding.pipeline import BuildConfig, build_shards  # noqa: E402
from shardgen.cli.main import main  # noqa: E402


def test_an_unreachable_ray_address_is_one_line_exit_2(sample_coco, tmp_path, capsys):
    argv = ["build", "--coco-root", str(sample_coco), "--split", "val", "--out", str(tmp_path / "o"), "--quiet",
            "--executor", "ray", "--ray-address", "127.0.0.1:9"]
    assert not ray.is_initialized()  # first in the module: the build must try to join, not reuse a session
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no Ray cluster answers at 127.0.0.1:9" in err, err


@pytest.fixture(scope="module")
def ray_session():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def _files(out: Path) -> dict[str, str]:
    """sha256 of every shard and of the manifest: what must not change with the executor."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.iterdir())
            if p.suffix in (".tar", ".json") and not p.name.startswith(".")}


def _cfg(coco: Path, encoder: Path, out: Path, **kw) -> BuildConfig:
    return BuildConfig(coco_root=coco, split="train", out=out, text_encoder=str(encoder), samples_per_shard=10,
                       workers=2, progress=False, **kw)


@pytest.fixture(scope="module")
def local_build(sample_coco, tiny_encoder, tmp_path_factory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("local") / "train"
    build_shards(_cfg(sample_coco, tiny_encoder, out))
    return _files(out)


def _kill_first_image_task(done: threading.Event, killed: list[int]) -> None:
    """SIGKILL the first Ray worker seen running a shard task (its process title names the task)."""
    import psutil

    while not done.is_set() and not killed:
        for proc in psutil.process_iter(["pid", "cmdline"]):
            if any("shardgen.run_shard_task" in part for part in (proc.info["cmdline"] or [])):
                os.kill(proc.info["pid"], signal.SIGKILL)
                killed.append(proc.info["pid"])
                return
        time.sleep(0.005)


@pytest.mark.slow
def test_a_ray_build_with_a_worker_killed_mid_shard_is_byte_identical_to_local_and_resumes(
        ray_session, sample_coco, tiny_encoder, tmp_path, local_build):
    done, killed = threading.Event(), []
    watcher = threading.Thread(target=_kill_first_image_task, args=(done, killed), daemon=True)
    watcher.start()
    try:
        build_shards(_cfg(sample_coco, tiny_encoder, tmp_path / "train", executor="ray"))
    finally:
        done.set()
        watcher.join()
    assert killed, "no image task was running to kill"
    assert _files(tmp_path / "train") == local_build and len(local_build) == 5 + 3  # 5 shards, 3 json
    (tmp_path / "train" / "train-000004.tar").unlink()  # as if the driver died before the last shard
    again = build_shards(_cfg(sample_coco, tiny_encoder, tmp_path / "train", executor="ray"))
    assert again.resumed_shards == 4 and _files(tmp_path / "train") == local_build  # finished shards skipped


@pytest.mark.slow
def test_caption_chunks_encoded_as_ray_tasks_equal_the_local_encoding(ray_session, sample_coco, tiny_encoder,
                                                                       tmp_path):
    import numpy as np

    from shardgen.sharding.executors import open_executor
    from shardgen.format.coco_folders import find_split
    from shardgen.sources.coco import load_split
    from shardgen.sources.listing import Listing
    from shardgen.text.cache import encode_captions

    records = Listing.from_records(load_split(find_split(sample_coco, "train"))[0])
    submitted = []
    with open_executor("ray", workers=2) as pool:
        def submit(fn, *args):
            submitted.append((fn.__name__, args[-1]))
            return pool.submit(fn, *args)

        on_ray, _ = encode_captions(records, text_encoder=str(tiny_encoder), cache=tmp_path / "a.pt", chunk=64,
                                    submit=submit, tasks_write=True)
        written_by_tasks = [path for _, path in submitted]
        submitted.clear()
        sent_back, _ = encode_captions(records, text_encoder=str(tiny_encoder), cache=tmp_path / "c.pt", chunk=64,
                                       submit=submit)
    here, _ = encode_captions(records, text_encoder=str(tiny_encoder), cache=tmp_path / "b.pt", chunk=64)
    n_texts = len(set(records.captions))
    assert [name for name, _ in submitted] == ["encode_chunk"] * -(-n_texts // 64) and len(submitted) > 1
    assert all(path is None for _, path in submitted)  # not shared: the chunks come back to the driver
    assert len(written_by_tasks) == len(submitted) and all(written_by_tasks)  # shared: each task wrote its own
    n = records.n_captions
    assert np.array_equal(on_ray.rows(0, n), here.rows(0, n)) and np.array_equal(sent_back.rows(0, n), here.rows(0, n))


@pytest.mark.slow
def test_a_ray_build_whose_nodes_do_not_share_the_cache_folder_sends_the_rows_and_gives_the_same_bytes(
        ray_session, sample_coco, tiny_encoder, tmp_path, local_build, monkeypatch):
    from shardgen.sharding import pipeline, probe

    real_probe, real_plan, planned = probe.probe_node, pipeline.iter_tasks, []
    monkeypatch.setattr(probe, "probe_node", lambda locations, token=None: real_probe(locations, None))
    monkeypatch.setattr(pipeline, "iter_tasks", lambda *a, **kw: (planned.append(t) or t for t in real_plan(*a, **kw)))
    build_shards(_cfg(sample_coco, tiny_encoder, tmp_path / "train", executor="ray"))
    assert _files(tmp_path / "train") == local_build
    assert planned and all(t.cache_files is None and t.rows is not None for t in planned)  # the rows travelled


def _refuse(text: str) -> None:
    from shardgen.errors import UserError

    raise UserError(text)


@pytest.mark.slow
def test_an_error_raised_in_a_task_comes_back_as_itself(ray_session):
    from shardgen.errors import UserError
    from shardgen.sharding.executors.ray import RayExecutor

    future = RayExecutor(capacity=2, gpus=0, startup_s=0.0).submit(_refuse, "one line for the user")
    with pytest.raises(UserError) as caught:
        future.result()
    assert type(caught.value) is UserError and str(caught.value) == "one line for the user"
