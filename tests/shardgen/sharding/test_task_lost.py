"""A shard task whose process dies under it (the OOM killer's SIGKILL) stops the build with one line naming the
input records it held, not a `BrokenProcessPool` traceback (issue 29); the shards before it stay journaled, and a
rerun resumes and gives the bytes of a build that was never interrupted."""

from __future__ import annotations

import json
import os
import signal

import pytest

import shardgen.sharding.shardtask as shardtask
from shardgen.cli.main import main
from shardgen.format.coco_folders import find_split
from shardgen.sources.coco import load_split

from ...helpers import digests, one_line


def test_a_killed_task_process_is_one_line_and_a_rerun_resumes(tmp_path, sample_coco, tiny_encoder, capsys,
                                                                monkeypatch):
    argv = ["build", "--coco-root", str(sample_coco), "--split", "val", "--text-encoder", str(tiny_encoder),
            "--samples-per-shard", "5", "--workers", "2", "--quiet"]
    sixth = sorted(load_split(find_split(sample_coco, "val"))[0], key=lambda r: r.image_id)[5].image_id
    real = shardtask.preprocess_records

    def killed_on_the_second_range(records, cfg, **kw):
        if records[0].image_id == sixth:
            os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer does
        return real(records, cfg, **kw)

    with monkeypatch.context() as m:  # the task processes are forked from here: they inherit the patch
        m.setattr(shardtask, "preprocess_records", killed_on_the_second_range)
        assert main([*argv, "--out", str(tmp_path / "o")]) == 2
    line = one_line(capsys.readouterr().err)
    # the pool breaks for every task in flight: the line names the first range whose result was lost (the first
    # range too, when it had not finished), and what finished before it is journaled
    assert ("input records 5..9 was lost" in line or "input records 0..4 was lost" in line) \
        and "rerun the same command" in line, line
    journal = tmp_path / "o" / ".shardgen-journal.json"
    names = [e["name"] for e in json.loads(journal.read_text())["shards"]] if journal.exists() else []
    assert names == ["val-000000.tar"][:len(names)] and ("0..4" in line) == (not names)
    assert main([*argv, "--out", str(tmp_path / "o")]) == 0
    assert main([*argv, "--out", str(tmp_path / "fresh")]) == 0
    assert digests(tmp_path / "o") == digests(tmp_path / "fresh")


@pytest.mark.slow
def test_an_image_server_that_goes_down_mid_build_is_one_line_and_a_rerun_resumes(tmp_path, sample_coco,
                                                                                   tiny_encoder, capsys):
    from ...netutil import FileServer
    from ..sources.test_table import write_table

    names = sorted(p.name for p in (sample_coco / "val2014").iterdir())
    table = write_table([{"image": n, "caption": f"photo {i}"} for i, n in enumerate(names)], tmp_path / "t.csv")
    argv = ["build", "--captions", str(table), "--text-encoder", str(tiny_encoder), "--samples-per-shard", "4",
            "--workers", "1", "--quiet", "--out", str(tmp_path / "o")]
    with FileServer({"/": b"images"}, root=sample_coco / "val2014") as server:  # "/" answers: the root exists
        for name in names[4:]:  # the server fails after the first range's images, as one going down would
            server.status[f"/{name}"] = 503
        assert main([*argv, "--image-root", server.url]) == 2
        line = one_line(capsys.readouterr().err)
        assert f"{server.url}/{names[4]}: unreadable after 3 tries" in line and "rerun the same command" in line
        journal = json.loads((tmp_path / "o" / ".shardgen-journal.json").read_text())
        assert [e["name"] for e in journal["shards"]] == ["all-000000.tar"]  # what finished is kept
        server.status.clear()  # back up: the rerun resumes after the journaled shard
        assert main([*argv, "--image-root", server.url]) == 0
    assert "resumed after 1 shards" in capsys.readouterr().out
