"""Several Ray nodes on this machine (`ray.cluster_utils.Cluster`: a head without CPUs and two 1-CPU workers),
one removed while the build runs (issue 28): its tasks are retried on the other node, every node is probed
first, and the shards are the local build's bytes."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

import pytest

from shardgen.sharding.pipeline import BuildConfig, build_shards

pytestmark = pytest.mark.slow
ray = pytest.importorskip("ray")


def _tars(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.glob("*.tar"))}


def test_a_node_removed_mid_build_costs_its_tasks_not_the_bytes(sample_coco, tiny_encoder, tmp_path):
    from ray.cluster_utils import Cluster

    settings = dict(coco_root=sample_coco, split="train", text_encoder=str(tiny_encoder), samples_per_shard=4,
                    progress=False)
    build_shards(BuildConfig(out=tmp_path / "local", workers=2, **settings))
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    cluster.add_node(num_cpus=1)
    doomed = cluster.add_node(num_cpus=1)
    removed, at_removal = threading.Event(), []
    journal = tmp_path / "ray" / ".shardgen-journal.json"

    def remove_after_the_first_shard() -> None:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if json.loads(journal.read_text())["shards"]:
                    break
            except (FileNotFoundError, ValueError, KeyError):
                pass
            time.sleep(0.05)
        at_removal.append(len(json.loads(journal.read_text())["shards"]))
        cluster.remove_node(doomed)
        removed.set()

    try:
        ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False, configure_logging=False)
        watcher = threading.Thread(target=remove_after_the_first_shard, daemon=True)
        watcher.start()
        report = build_shards(BuildConfig(out=tmp_path / "ray", executor="ray", **settings))
        watcher.join(timeout=150)
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert removed.is_set() and at_removal[0] < len(report.manifest.shards)  # removed while the build ran
    assert _tars(tmp_path / "ray") == _tars(tmp_path / "local")
