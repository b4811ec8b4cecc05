"""`build_and_upload`, the library function behind `shardgen build --out URL`: the destination's old manifest goes
before the first shard, the staged build lands whole, the manifest last (a file:// URL here; S3 in
tests/loaders/test_remote.py)."""

import json

from shardgen.sharding import pipeline
from shardgen.sharding.pipeline import build_shards
from shardgen.config import BuildConfig
from shardgen.publish import upload as upload_module
from shardgen.publish.upload import build_and_upload, staging_folder

from ...helpers import digests


def test_a_build_is_published_as_it_goes_old_manifest_first(tmp_path, sample_coco, tiny_encoder, monkeypatch):
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "manifest.json").write_text("{}")  # an old build's: must be gone before the first shard arrives
    seen, real_remove = [], upload_module.remove_indexes

    def watched_remove(fs, root):
        seen.append("indexes removed")
        real_remove(fs, root)

    def watched_build(cfg, *, on_shard):
        def sent(path):
            seen.append((path.name, (dest / "manifest.json").exists()))
            on_shard(path)
        return build_shards(cfg, on_shard=sent)

    monkeypatch.setattr(upload_module, "remove_indexes", watched_remove)
    monkeypatch.setattr(pipeline, "build_shards", watched_build)
    cfg = BuildConfig(coco_root=sample_coco, split="val", out=tmp_path / "stage", text_encoder=str(tiny_encoder),
                      samples_per_shard=5, workers=1, progress=False)
    published = build_and_upload(cfg, f"file://{dest}", progress=False)
    shards = [f"val-{i:06d}.tar" for i in range(3)]
    assert seen == ["indexes removed", *((name, False) for name in shards), "indexes removed"]  # then upload()
    assert published.build.manifest.n_samples == 12 and len(published.build.manifest.shards) == 3
    assert published.upload.uploaded[-1] == "manifest.json"  # the manifest very last
    assert digests(dest) == digests(tmp_path / "stage")
    assert json.loads((dest / "manifest.json").read_text())["totals"]["n_samples"] == 12


def test_the_default_staging_folder_is_named_by_the_url():
    assert str(staging_folder("s3://bucket/coco/train")) == ".shardgen-staging/bucket_coco_train"
