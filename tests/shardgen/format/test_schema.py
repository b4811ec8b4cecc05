"""The sample schema: a field added in one place (a `Field` registered in a copy of `SCHEMA`) is written by the
build, listed in the manifest, checked by `shardgen verify` and by the loader, and carried into the batch; the
loader and the format's reader refuse the same hostile samples for the same reasons."""

from __future__ import annotations

import json
import shutil
import tarfile

import numpy as np
import pytest
import torch

from loaders import LoaderError, make_loader
from shardgen.format import SCHEMA, Field, SchemaError, encode_npy, schema
from shardgen.publish.verify import verify

from ..helpers import rewrite_member
from .test_samples_hostile import HOSTILE, REASONS, _hostile_copy


def _check_ncap(n: int, values) -> None:
    if n != len(values["json"]["captions"]):
        raise SchemaError(f"ncap {n} is not the number of captions")


def _decode_ncap(data) -> int:
    text = str(data, "ascii", "replace")
    if not text.isdigit():
        raise SchemaError(f"ncap {text[:20]!r} is not a count")
    return int(text)


NCAP = Field("ncap", "the number of captions, decimal ASCII (test-only)",
             encode=lambda values: str(len(values["json"]["captions"])).encode(), decode=_decode_ncap,
             check=_check_ncap, batch=lambda counts: np.array(counts, dtype=np.int64))


def _built_with(field: Field, out, sample_coco, tiny_encoder):
    """The val split built with `field` registered (and unregistered again afterwards)."""
    from shardgen.sharding.pipeline import BuildConfig, build_shards

    patch = pytest.MonkeyPatch()
    patch.setattr(schema, "SCHEMA", SCHEMA.with_field(field))
    try:
        build_shards(BuildConfig(coco_root=sample_coco, split="val", out=out, text_encoder=str(tiny_encoder),
                                 samples_per_shard=4, workers=1, progress=False))
    finally:
        patch.undo()
    return out


@pytest.fixture(scope="module")
def ncap_shards(tmp_path_factory, sample_coco, tiny_encoder):
    return _built_with(NCAP, tmp_path_factory.mktemp("ncap") / "val", sample_coco, tiny_encoder)


def test_a_field_added_through_the_schema_is_written_verified_and_carried(ncap_shards, monkeypatch):
    monkeypatch.setattr(schema, "SCHEMA", SCHEMA.with_field(NCAP))
    with tarfile.open(ncap_shards / "val-000000.tar") as tar:
        names = tar.getnames()
    assert names[:5] == [f"{names[0].split('.')[0]}.{ext}" for ext in ("jpg", "json", "ncap", "npy", "txt")]
    assert json.loads((ncap_shards / "manifest.json").read_text())["fields"] == ["jpg", "json", "ncap", "npy", "txt"]
    report = verify(str(ncap_shards))
    assert report.ok and report.n_samples == 12, report.problems
    batches = list(make_loader(str(ncap_shards), batch_size=4, shuffle=False, caption="all"))
    counts = [int(n) for b in batches for n in b["ncap"]]
    assert counts == [int(m.sum()) for b in batches for m in b["caption_mask"]] and len(counts) == 12
    assert batches[0]["ncap"].dtype == torch.int64  # a tensor, like every other array of the batch


def test_the_added_fields_rule_is_checked_by_verify_and_the_loader(ncap_shards, tmp_path, monkeypatch):
    monkeypatch.setattr(schema, "SCHEMA", SCHEMA.with_field(NCAP))
    shutil.copytree(ncap_shards, tmp_path / "v")
    rewrite_member(tmp_path / "v" / "val-000000.tar", lambda name, data: b"99" if name.endswith(".ncap") else None)
    problems = verify(str(tmp_path / "v")).problems
    assert any("ncap 99 is not the number of captions" in p for p in problems), problems
    with pytest.raises(LoaderError, match="val-000000.tar: .*: bad sample .*ncap 99 is not the number of captions"):
        list(make_loader(str(tmp_path / "v"), batch_size=4, shuffle=False))


def test_a_reader_that_does_not_know_a_field_reads_the_samples_without_it(ncap_shards):
    """An optional field needs no new schema version: readers of the schema before it accept its member."""
    report = verify(str(ncap_shards))
    assert report.ok and report.n_samples == 12, report.problems
    batches = list(make_loader(str(ncap_shards), batch_size=4, shuffle=False))
    assert sum(len(b["key"]) for b in batches) == 12 and "ncap" not in batches[0]


def test_a_sample_missing_a_fields_member_is_refused(ncap_shards, tmp_path, monkeypatch):
    monkeypatch.setattr(schema, "SCHEMA", SCHEMA.with_field(NCAP).with_field(
        Field("cls", "a class id (test-only)", encode=lambda values: b"1", decode=bytes)))
    with pytest.raises(LoaderError, match="missing cls"):
        list(make_loader(str(ncap_shards), batch_size=4, shuffle=False))
    assert any("missing cls" in p for p in verify(str(ncap_shards)).problems)


# --- a second embedding field through the public contract (build end + loader end), nothing else changed -----

EMB2_DIM = 8


def _check_emb2(emb: np.ndarray, values) -> None:
    if emb.dtype != np.float16 or emb.shape != (len(values["json"]["captions"]), EMB2_DIM):
        raise SchemaError(f"emb2 is {emb.dtype} {emb.shape}, not float16 [n_captions, {EMB2_DIM}]")


EMB2 = Field("emb2", f"float16 [n_captions, {EMB2_DIM}]: a second caption embedding, row i ↔ captions[i] "
                     "(test-only: the first embedding's first 8 values, negated)",
             build=lambda record, products: -products["embeddings"][:, :EMB2_DIM],
             encode=lambda values: encode_npy(values["emb2"]), decode=schema.decode_embeddings, check=_check_emb2,
             select=lambda emb, caption: emb if caption is None else emb[caption],
             batch=lambda rows: np.stack(rows).astype(np.float32))


@pytest.fixture(scope="module")
def emb2_shards(tmp_path_factory, sample_coco, tiny_encoder):
    return _built_with(EMB2, tmp_path_factory.mktemp("emb2") / "val", sample_coco, tiny_encoder)


def test_a_second_embedding_field_is_built_verified_and_carried_for_the_chosen_caption(emb2_shards, monkeypatch):
    monkeypatch.setattr(schema, "SCHEMA", SCHEMA.with_field(EMB2))
    assert verify(str(emb2_shards)).ok
    batches = list(make_loader(str(emb2_shards), batch_size=4, shuffle=False, caption="random", seed=5))
    first = torch.cat([b["text_embedding"] for b in batches])  # [12, 512]: the chosen caption's row
    second = torch.cat([b["emb2"] for b in batches])  # [12, 8]: the same caption's row of the second field
    assert second.shape == (12, EMB2_DIM) and torch.equal(second, -first[:, :EMB2_DIM])
    chosen = [c for b in batches for c in b["caption"]]
    firsts = [c for b in make_loader(str(emb2_shards), batch_size=4, shuffle=False, caption="first")
              for c in b["caption"]]
    assert sum(c != f for c, f in zip(chosen, firsts)) >= 6  # most samples' chosen caption is not row 0


def test_a_field_is_registered_once():
    with pytest.raises(ValueError, match="'npy' is taken"):
        SCHEMA.with_field(Field("npy", "again", encode=bytes, decode=bytes))
    assert SCHEMA.exts == ("jpg", "json", "npy", "txt") and "ncap" not in SCHEMA.exts


@pytest.fixture(scope="module")
def hostile_sets(train_shards, tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile_loader")
    return {case: (root / f"c{i}", _hostile_copy(train_shards, root / f"c{i}", case)) for i, case in enumerate(HOSTILE)}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_the_loader_refuses_what_the_format_refuses_for_the_same_reason(hostile_sets, case):
    where, key = hostile_sets[case]
    with pytest.raises(LoaderError, match=f"train-000000.tar: {key}: bad sample .*{REASONS[case]}"):
        list(make_loader(str(where), batch_size=8, shuffle=False))
