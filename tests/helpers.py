"""The test helpers more than one test module uses: shard readers independent of loaders/ (so they check the
files themselves), shard and manifest editors for hostile inputs, `one_line` (what a command printed is one line
and no traceback) and `free_port` (a loopback port for servers and DDP rendezvous)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
from pathlib import Path

from shardgen.format import decode_npy, iter_tar_samples


def read_all(shard_dir: Path) -> list[tuple[str, dict]]:
    manifest = json.loads((shard_dir / "manifest.json").read_text())
    out = []
    for shard in manifest["shards"]:
        with open(shard_dir / shard["name"], "rb") as fh:
            for key, fields in iter_tar_samples(fh):
                meta = json.loads(fields["json"])
                out.append((key, {"meta": meta, "npy": decode_npy(fields["npy"]), "txt": fields["txt"].decode(),
                                  "jpg": fields["jpg"]}))
    return out


def digests(shard_dir: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(shard_dir.iterdir())
            if p.suffix in (".tar", ".json") and not p.name.startswith(".")}


DROP = object()  # returned by an edit: leave the member out


def rewrite_member(shard: Path, edit) -> None:
    """Rewrite a shard in place, replacing each member's bytes with `edit(name, data)` (None keeps it, DROP
    leaves it out); its DALI index, when it has one, is rewritten to fit (as a build would write it: a test of a
    lying index writes one itself, `shardgen verify` lists a stale one)."""
    import io
    import tarfile

    members = []
    with tarfile.open(shard) as tar:
        for m in tar:
            members.append((m, tar.extractfile(m).read()))
    with tarfile.open(shard, "w", format=tarfile.USTAR_FORMAT) as tar:
        for m, data in members:
            new = edit(m.name, data)
            if new is DROP:
                continue
            if new is not None:
                data, m.size = new, len(new)
            tar.addfile(m, io.BytesIO(data))
    if shard.with_suffix(".idx").exists():
        from shardgen.sharding.dali import write_dali_index

        write_dali_index(shard)


def one_line(err: str) -> str:
    """The one line a command printed to stderr; fails when there are more, or a traceback."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def copy_shards(shards: Path, into: Path) -> Path:
    """A copy of the shard folder `shards` at `into`, for a test to damage."""
    import shutil

    shutil.copytree(shards, into)
    return into


def malformed_manifest(shards: Path, into: Path) -> Path:
    """A copy of the shard folder `shards` whose manifest.json is not JSON."""
    copy_shards(shards, into)
    (into / "manifest.json").write_text('{"format": "shardgen", "shards": [')
    return into


def lying_manifest(shards: Path, into: Path) -> Path:
    """A copy of the shard folder `shards` whose manifest claims one sample more in the first shard than it holds
    (and in its totals): a well-formed manifest that disagrees with its shards."""
    copy_shards(shards, into)
    data = json.loads((into / "manifest.json").read_text())
    data["shards"][0]["n_samples"] += 1
    data["totals"]["n_samples"] = data["totals"].get("n_samples", 0) + 1
    (into / "manifest.json").write_text(json.dumps(data, indent=2))
    return into


@contextlib.contextmanager
def moto_s3(*buckets: str):
    """A moto S3 server on loopback with `buckets` made, the AWS environment pointing at it for the duration;
    yields a boto3 client. s3fs's cached instances are dropped on entry and exit (they bind an endpoint)."""
    import boto3
    import pytest
    import s3fs
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    mp = pytest.MonkeyPatch()
    endpoint = f"http://127.0.0.1:{port}"
    for k, v in {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1"}.items():
        mp.setenv(k, v)
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    for bucket in buckets:
        client.create_bucket(Bucket=bucket)
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        yield client
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        mp.undo()
        server.stop()
