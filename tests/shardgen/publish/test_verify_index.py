"""`shardgen verify` checks each shard's DALI `.idx` against its tar (issue 29): a sound index passes, a lying one
(shifted by three samples, which the loader's landing check cannot see) or one that is not an index is listed as
the index's problem, naming the `.idx`, while the intact shard is not blamed."""

from __future__ import annotations

from pathlib import Path

from shardgen.cli.main import main
from shardgen.publish.verify import verify

from ...helpers import copy_shards


def shifted_index(idx: Path, by: int = 3) -> None:
    """Rewrite `idx` so that line i lists sample i + `by` (keys and offsets agree with each other, so a seek lands
    on the key the index names), padded with `by` made-up samples past the tar's end: same sample count."""
    lines = idx.read_text().splitlines()
    fields = lines[-1].split()
    pad = [" ".join(f"{e} {int(o) + (1 << 20) * (k + 1)} {s} fake{k}.{e}"
                    for e, o, s in zip(fields[::4], fields[1::4], fields[2::4])) for k in range(by)]
    idx.write_text("\n".join([lines[0]] + lines[1 + by:] + pad) + "\n")


def test_verify_blames_a_lying_index_not_its_intact_shard(tmp_path, train_shards, capsys):
    assert verify(str(train_shards)).ok  # every index the build wrote fits its tar
    d = copy_shards(train_shards, tmp_path / "s")
    assert (d / "train-000000.idx").exists()
    shifted_index(d / "train-000000.idx")
    (d / "train-000001.idx").write_text("v1.2 10\njpg 512 seven a.jpg\n")
    problems = verify(str(d)).problems
    assert len(problems) == 2, problems
    assert problems[0].startswith("train-000000.idx: sample 0 is ") and "by the index" in problems[0]
    assert "the index does not fit train-000000.tar (which checks out); rebuild it" in problems[0]
    assert problems[1].startswith("train-000001.idx: ")
    assert not any(p.startswith("train-000000.tar") for p in problems)
    assert main(["verify", str(d)]) == 1
    assert "train-000000.idx" in capsys.readouterr().out + capsys.readouterr().err
