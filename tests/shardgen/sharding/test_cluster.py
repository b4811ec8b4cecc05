"""A real cluster's first day (issue 28): a Ray head started with `ray start --head` in another folder (token
authentication on, as Ray 2.60 starts it), joined by `--ray-address HOST:PORT` from a folder of relative paths,
gives the local build's bytes; each node is probed before any work, so a node without the store's credentials, with
other codecs, or without the input is one line and exit 2; an address that is not Ray and a missing token are one
line each."""

from __future__ import annotations

import hashlib
import http.server
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from shardgen.errors import UserError
from shardgen.sharding import probe
from shardgen.sharding.executors.ray import check_address

from ...helpers import free_port, moto_s3, one_line

pytestmark = pytest.mark.slow
ray = pytest.importorskip("ray")
RAY = str(Path(sys.executable).with_name("ray"))


def _node_env() -> dict[str, str]:
    """A node's environment: none of the driver's store settings or credentials; no instance-metadata lookups."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAY_"))}
    return {**env, "AWS_EC2_METADATA_DISABLED": "true"}


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """`ray start --head` on loopback, from a folder of its own; stopped (with every Ray process here) after."""
    folder, port = tmp_path_factory.mktemp("head"), free_port()
    started = subprocess.run([RAY, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                              "--num-cpus", "2", "--include-dashboard", "false", "--disable-usage-stats"],
                             cwd=folder, env=_node_env(), capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stderr[-2000:]
    yield f"127.0.0.1:{port}"
    subprocess.run([RAY, "stop", "--force"], capture_output=True, timeout=120)


def _shardgen(args: list[str], *, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shardgen", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {}), "PYTHONPATH": str(Path.cwd())})


def _tars(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.glob("*.tar"))}


def test_a_head_started_elsewhere_joined_by_host_port_with_relative_paths_gives_the_local_bytes(
        head, sample_coco, tiny_encoder, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(sample_coco, work / "coco")
    shutil.copytree(tiny_encoder, work / "enc")
    args = ["build", "--coco-root", "coco", "--split", "val", "--text-encoder", "enc", "--samples-per-shard", "5",
            "--quiet"]
    local = _shardgen([*args, "--out", "local"], cwd=work)
    assert local.returncode == 0, local.stderr
    joined = _shardgen([*args, "--out", "ray", "--executor", "ray", "--ray-address", head], cwd=work)
    assert joined.returncode == 0, joined.stderr[-3000:]
    assert _tars(work / "ray") == _tars(work / "local") and len(_tars(work / "local")) == 3


def test_a_node_without_the_store_credentials_is_one_line_exit_2(head, sample_coco, tiny_encoder, tmp_path):
    with moto_s3("lab"):  # the driver has the endpoint and credentials; the head's node does not
        done = _shardgen(["build", "--coco-root", str(sample_coco), "--split", "val", "--text-encoder",
                          str(tiny_encoder), "--out", "s3://lab/val", "--staging", str(tmp_path / "w"), "--quiet",
                          "--executor", "ray", "--ray-address", head], cwd=tmp_path)
    assert done.returncode == 2
    line = one_line(done.stderr)
    assert "node " in line and "cannot do this build: s3://lab/val" in line, line


def test_a_missing_token_names_the_authentication_token_and_the_fix(head, sample_coco, tmp_path):
    done = _shardgen(["build", "--coco-root", str(sample_coco), "--split", "val", "--out", str(tmp_path / "o"),
                      "--quiet", "--executor", "ray", "--ray-address", head], cwd=tmp_path,
                     env={"HOME": str(tmp_path), "RAY_AUTH_TOKEN": "", "RAY_AUTH_TOKEN_PATH": ""})
    assert done.returncode == 2
    line = one_line(done.stderr)
    assert "authentication token" in line and "ray get-auth-token" in line, line


def test_a_port_that_answers_but_is_not_ray_is_refused_in_seconds():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(UserError, match="answers, but it is not a Ray cluster"):
            check_address(f"127.0.0.1:{server.server_address[1]}", timeout=3)
    finally:
        server.shutdown()


class _Node:
    """An executor whose one node reports `found` (the probe's answer), as a Ray node would."""

    name, capacity, gpus, runs_here = "fake", 1, 0, False

    def __init__(self, found: dict) -> None:
        self.found = found

    def each_node(self, fn, *args):
        class Done:
            def result(inner):
                return self.found
        return [Done()]


def _cfg(tmp_path):
    from shardgen.config import BuildConfig

    return BuildConfig(coco_root=tmp_path, split="val", out=tmp_path / "o")


def test_a_node_with_other_codecs_is_refused_naming_the_node_and_the_versions(tmp_path):
    theirs = {**probe.environment(), "pillow": "12.0.0"}
    node = _Node({"node": "worker-3", "environment": theirs, "problems": []})
    with pytest.raises(UserError, match=r"node worker-3 runs pillow 12\.0\.0 \(here .*\): its shards would have "
                                        "other bytes"):
        probe.check_nodes(node, _cfg(tmp_path), output=str(tmp_path / "o"))


def test_a_node_without_the_input_path_is_refused_naming_it(tmp_path):
    found = probe.probe_node([str(tmp_path / "not-on-this-node")])
    assert found["problems"] == [f"{tmp_path / 'not-on-this-node'}: no such file or folder on this node"]
    with pytest.raises(UserError, match="node .* cannot do this build: .*not-on-this-node"):
        probe.check_nodes(_Node(found), _cfg(tmp_path), output=str(tmp_path / "o"))


class _Here(_Node):
    """Nodes that run the probe in this process (they see this machine's files), or none at all."""

    def __init__(self, nodes: int = 1, probe_fn=None) -> None:
        self.nodes, self.probe_fn = nodes, probe_fn

    def each_node(self, fn, *args):
        class Done:
            def __init__(inner, value):
                inner.value = value

            def result(inner):
                if isinstance(inner.value, BaseException):
                    raise inner.value
                return inner.value

        out = []
        for _ in range(self.nodes):
            try:
                out.append(Done((self.probe_fn or fn)(*args)))
            except TypeError as exc:
                out.append(Done(exc))
        return out


def test_the_probe_says_whether_every_node_sees_the_cache_folder(tmp_path):
    cfg, cache = _cfg(tmp_path), tmp_path / "cache"
    (tmp_path / "o").mkdir()
    assert probe.check_nodes(_Here(), cfg, output=str(tmp_path / "o"), cache_folder=cache) is True
    assert not list(cache.iterdir())  # the token is gone
    blind = _Here(probe_fn=lambda locations, token=None: probe.probe_node(locations, None))
    assert probe.check_nodes(blind, cfg, output=str(tmp_path / "o"), cache_folder=cache) is False
    assert probe.check_nodes(_Here(nodes=0), cfg, output=str(tmp_path / "o"), cache_folder=cache) is False


def test_a_node_whose_probe_is_another_versions_is_one_line(tmp_path):
    old = _Here(probe_fn=lambda locations: probe.probe_node(locations))  # a probe that takes one argument
    (tmp_path / "o").mkdir()
    with pytest.raises(UserError, match=r"a node runs another shardgen version .* install the same version on every"):
        probe.check_nodes(old, _cfg(tmp_path), output=str(tmp_path / "o"), cache_folder=tmp_path / "cache")
