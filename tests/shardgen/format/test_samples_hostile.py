"""Malformed samples against the readers a person runs: `verify` lists each one as a problem naming shard and key
(exit 1); `show` and `export` stop at the first with a `SchemaError` naming shard and key (the CLI prints one line,
exit 2); none lets a raw exception (RecursionError, OverflowError, SyntaxError, ZeroDivisionError) escape. Bad
options are `UserError`s, checked before anything is read; a 20 MB caption is drawn quickly."""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest

from shardgen.cli.main import main
from shardgen.publish.export import export_clip_benchmark
from shardgen.format import (
    SchemaError,
    UserError,
    encode_npy,
    npy_layout,
    parse_meta,
    parse_sample,
)
from shardgen.publish.show import render_grid, show
from shardgen.publish.verify import verify

from ...helpers import DROP, read_all, rewrite_member


def _npy_with_bad_header(data: bytes) -> bytes:
    return data.replace(b"'shape': (", b"'shape': [", 1)  # same length: only the header's syntax breaks


def _json(edit):
    return lambda data: json.dumps(edit(json.loads(data))).encode()


HOSTILE = {  # what the first sample's members become: {ext: new bytes, or a function of the old bytes}
    "json nested 200k deep": {"json": b"[" * 200_000 + b"]" * 200_000},
    "no captions, (0, 512) embeddings": {"json": _json(lambda m: {**m, "captions": []}),
                                         "npy": encode_npy(np.zeros((0, 512), np.float16))},
    "image_id 2**70": {"json": _json(lambda m: {**m, "image_id": 2**70})},
    "image_id as text": {"json": _json(lambda m: {**m, "image_id": str(m["image_id"])})},
    ".npy header syntax error": {"npy": _npy_with_bad_header},
    "json is a list": {"json": b"[1, 2, 3]"},
    "json is not UTF-8": {"json": b"\xff\xfe{}"},
    "captions not strings": {"json": _json(lambda m: {**m, "captions": [1] * len(m["captions"])})},
    "caption a lone surrogate": {"json": lambda d: d.replace(b'"captions":["', b'"captions":["\\ud800', 1)},
    "npy member missing": {"npy": None},
    "jpg member missing": {"jpg": None},
}
REASONS = {
    "json nested 200k deep": "nested too deep", "no captions, (0, 512) embeddings": "no captions",
    "image_id 2**70": "outside 0..", "image_id as text": "not an integer", ".npy header syntax error": "bad .npy header",
    "json is a list": "not an object", "json is not UTF-8": "does not parse", "captions not strings": "list of strings",
    "caption a lone surrogate": "not valid Unicode", "npy member missing": "missing npy",
    "jpg member missing": "missing jpg",
}


def _hostile_copy(train_shards, where, case: str) -> str:
    """A copy of the shard set whose first sample is made hostile (the manifest is left as it was)."""
    shutil.copytree(train_shards, where)
    key = read_all(where)[0][0]

    def edit(name: str, data: bytes):
        name_key, ext = name.split(".", 1)
        change = HOSTILE[case].get(ext, data) if name_key == key else data
        if change is None:
            return DROP  # the member is left out
        return change(data) if callable(change) else change

    rewrite_member(where / "train-000000.tar", edit)
    return key


@pytest.fixture(scope="module")
def hostile_sets(train_shards, tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    return {case: (root / f"c{i}", _hostile_copy(train_shards, root / f"c{i}", case)) for i, case in enumerate(HOSTILE)}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_verify_lists_each_malformed_sample(hostile_sets, case, capsys):
    where, key = hostile_sets[case]
    report = verify(str(where))
    named = [p for p in report.problems if p.startswith(f"train-000000.tar: {key}: ")]
    assert named and REASONS[case] in named[0], report.problems
    assert main(["verify", str(where), "--quiet"]) == 1
    assert f"PROBLEM train-000000.tar: {key}: " in capsys.readouterr().out


@pytest.mark.parametrize("case", list(HOSTILE))
def test_show_and_export_stop_with_a_format_error_naming_shard_and_key(hostile_sets, case, tmp_path, capsys):
    where, key = hostile_sets[case]
    for run in (lambda: show(str(where), tmp_path / "g.png", n=2),
                lambda: export_clip_benchmark(str(where), tmp_path / "cb")):
        with pytest.raises(SchemaError, match=f"train-000000.tar: {key}: .*{REASONS[case]}"):
            run()
    assert not (tmp_path / "cb" / "test" / "nshards.txt").exists()  # no tool reads a partial export
    assert main(["show", str(where), "--out", str(tmp_path / "g.png")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and key in err


def test_the_rules_directly():
    with pytest.raises(SchemaError, match="s: k: key does not match image_id 7"):
        parse_meta(b'{"image_id": 7, "captions": ["a"]}', where="s: k", key="000000000008")
    assert parse_meta(memoryview(b'{"image_id": 7, "captions": ["a"]}'), where="s: k").captions == ["a"]
    good = encode_npy(np.zeros((1, 512), np.float16))
    fields = {"jpg": b"", "json": b'{"image_id": 7, "captions": ["a"]}', "npy": good, "txt": b"a"}
    assert parse_sample("000000000007", fields, source="s").image_id == 7
    extra = parse_sample("000000000007", {**fields, "cls": b"1"}, source="s")  # a member no field names: not read
    assert extra.image_id == 7 and "cls" not in extra.values
    with pytest.raises(SchemaError, match="missing npy"):
        parse_sample("000000000007", {k: v for k, v in fields.items() if k != "npy"}, source="s")
    with pytest.raises(SchemaError, match=r"expected float16 \(1, 512\)"):
        parse_sample("000000000007", {**fields, "npy": encode_npy(np.zeros((1, 512), np.float32))}, source="s")
    with pytest.raises(SchemaError, match="txt is not the first caption"):
        parse_sample("000000000007", {**fields, "txt": b"b"}, source="s")
    for header in (_npy_with_bad_header(good), good.replace(b"(1, 512)", b"(1, 5.2)"),
                   good.replace(b"'descr'", b"'DESCR'"), good.replace(b"(1, 512)", b"(-1, 51)")):
        with pytest.raises(ValueError, match="bad .npy header"):
            npy_layout(header)
    with pytest.raises(ValueError, match="payload"):
        npy_layout(good.replace(b"(1, 512)", b"(99999,)"))
    header = b"{'descr': '<f2', 'fortran_order': False, 'shape': (1099511627776, 1099511627776), }"
    header = header.ljust(118) + b"\n"
    with pytest.raises(ValueError, match="payload"):  # 2**80 elements: counted exactly, no int64 overflow
        npy_layout(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + bytes(1024))


def test_bad_options_are_user_errors_before_anything_is_read(tmp_path):
    missing = str(tmp_path / "nowhere")
    for run in (lambda: show(missing, tmp_path / "g.png", n=0), lambda: show(missing, tmp_path / "g.png", columns=0),
                lambda: show(missing, tmp_path / "g.png", n=-3),
                lambda: export_clip_benchmark(missing, tmp_path / "cb", samples_per_shard=0),
                lambda: render_grid([], columns=0)):
        with pytest.raises(UserError, match="must be at least 1"):
            run()
    with pytest.raises(UserError, match="nowhere/manifest.json: not found"):
        show(missing, tmp_path / "g.png")


def test_show_draws_a_20_mb_caption_quickly(tmp_path, train_shards):
    d = tmp_path / "long"
    shutil.copytree(train_shards, d)
    key = read_all(d)[0][0]
    caption = "a very long caption " * 1_000_000  # 20 MB

    def edit(name, data):
        if name == f"{key}.json":
            meta = json.loads(data)
            return json.dumps({**meta, "captions": [caption] + meta["captions"][1:]}).encode()
        return caption.encode() if name == f"{key}.txt" else None

    rewrite_member(d / "train-000000.tar", edit)
    t0 = time.perf_counter()
    show(str(d), tmp_path / "g.png", n=4)
    assert time.perf_counter() - t0 < 20  # wrapping the whole caption took minutes
