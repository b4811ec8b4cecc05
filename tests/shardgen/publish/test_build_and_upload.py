"""`build_and_upload`, the library function behind `shardgen build --out URL`: the destination's old manifest goes
before the first shard, the shard tasks write their shards to the store themselves (none passes through the local
work folder), the manifest last (a file:// URL here; S3 in tests/shardgen/sharding/test_remote_build.py)."""

import json

from shardgen.config import BuildConfig
from shardgen.publish import upload as upload_module
from shardgen.publish.upload import build_and_upload
from shardgen.sharding import pipeline
from shardgen.sharding.outputs import staging_folder

from ...helpers import digests


def test_a_build_is_written_straight_to_the_destination_old_manifest_first(tmp_path, sample_coco, tiny_encoder,
                                                                          monkeypatch):
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "manifest.json").write_text("{}")  # an old build's: must be gone before the first shard arrives
    seen, real_remove, real_build = [], upload_module.remove_indexes, pipeline.build_shards

    def watched_remove(fs, root):
        seen.append("indexes removed")
        real_remove(fs, root)

    def watched_build(cfg, **kw):
        seen.append(("build starts; old manifest there:", (dest / "manifest.json").exists()))
        return real_build(cfg, **kw)

    monkeypatch.setattr(upload_module, "remove_indexes", watched_remove)
    monkeypatch.setattr(pipeline, "build_shards", watched_build)
    settings = dict(coco_root=sample_coco, split="val", text_encoder=str(tiny_encoder), samples_per_shard=5,
                    workers=2, progress=False)
    report = build_and_upload(BuildConfig(out=f"file://{dest}", staging=tmp_path / "stage", **settings))
    assert seen == ["indexes removed", ("build starts; old manifest there:", False)]
    assert report.manifest.n_samples == 12 and len(report.manifest.shards) == 3
    stage = {p.name for p in (tmp_path / "stage").iterdir()}
    assert not any(name.endswith((".tar", ".idx")) for name in stage), stage  # no shard passed through here
    real_build(BuildConfig(out=tmp_path / "local", **settings))
    local = digests(tmp_path / "local")
    assert {k: v for k, v in digests(dest).items() if not k.endswith(".pt")} == \
        {k: v for k, v in local.items() if not k.endswith(".pt")}  # the same bytes as a local build
    assert json.loads((dest / "manifest.json").read_text())["totals"]["n_samples"] == 12


def test_the_default_staging_folder_is_named_by_the_url():
    assert str(staging_folder("s3://bucket/coco/train")) == ".shardgen-staging/bucket_coco_train"
