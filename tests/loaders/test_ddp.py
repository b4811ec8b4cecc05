"""Real 2-process torch.distributed (gloo) runs: ranks detect themselves, yield equal batch counts, cover once; an
epoch interrupted on 2 ranks continues on 1 and the other way round."""

import json

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ..helpers import free_port


def _worker(rank: int, world: int, port: int, shards: str, out: str) -> None:
    from loaders import make_loader

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        loader = make_loader(shards, batch_size=4, num_workers=2, seed=1)
        loader.set_epoch(2)
        keys, n_batches = [], 0
        for batch in loader:
            n_batches += 1
            keys += batch["key"]
            dist.all_reduce(torch.ones(1))  # a collective per step: unequal batch counts would hang here
        with open(f"{out}/rank{rank}.json", "w") as fh:
            json.dump({"keys": keys, "batches": n_batches, "len": len(loader)}, fh)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_process_gloo_epoch(tmp_path, train_shards):
    mp.spawn(_worker, args=(2, free_port(), str(train_shards), str(tmp_path)), nprocs=2, join=True)
    r = [json.loads((tmp_path / f"rank{i}.json").read_text()) for i in range(2)]
    assert r[0]["batches"] == r[1]["batches"] == r[0]["len"] == 6
    keys = r[0]["keys"] + r[1]["keys"]
    assert len(keys) == 48 and len(set(keys)) == 48


def _elastic_worker(rank: int, world: int, port: int, shards: str, out: str, stop: int) -> None:
    """One gloo rank: resume from out/state.json if it is there (else start epoch 2), read `stop` batches (0: to
    the end, one all_reduce per batch), and write the keys and the state dict."""
    from pathlib import Path

    from loaders import make_loader

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        loader = make_loader(shards, batch_size=4 if world == 2 else 6, num_workers=2, seed=1)
        saved = Path(out) / "state.json"
        if saved.is_file():
            loader.load_state_dict(json.loads(saved.read_text()))
        else:
            loader.set_epoch(2)
        keys, n_batches = [], 0
        for batch in loader:
            if n_batches == stop > 0:
                break
            n_batches += 1
            keys += batch["key"]
            dist.all_reduce(torch.ones(1))  # a collective per step: unequal batch counts would hang here
        with open(f"{out}/rank{rank}.json", "w") as fh:
            json.dump({"keys": keys, "batches": n_batches, "state": loader.state_dict(batches=n_batches)}, fh)
        loader.close()
    finally:
        dist.destroy_process_group()


def _one_rank(shards: str, out, *, stop: int) -> list[str]:
    from loaders import make_loader

    loader = make_loader(shards, batch_size=6, num_workers=2, seed=1)
    saved = out / "state.json"
    if saved.is_file():
        loader.load_state_dict(json.loads(saved.read_text()))
    else:
        loader.set_epoch(2)
    keys = []
    for i, batch in enumerate(loader):
        if i == stop > 0:
            break
        keys += batch["key"]
    saved.write_text(json.dumps(loader.state_dict(batches=stop or None)))
    loader.close()
    return keys


def _two_ranks(shards: str, out, *, stop: int) -> list[str]:
    mp.spawn(_elastic_worker, args=(2, free_port(), shards, str(out), stop), nprocs=2, join=True)
    r = [json.loads((out / f"rank{i}.json").read_text()) for i in range(2)]
    assert r[0]["state"] == r[1]["state"] and r[0]["batches"] == r[1]["batches"]
    (out / "state.json").write_text(json.dumps(r[0]["state"]))
    return r[0]["keys"] + r[1]["keys"]


@pytest.mark.slow
@pytest.mark.parametrize("direction", ["2->1", "1->2"])
def test_gloo_resume_with_another_world_size(tmp_path, train_shards, direction):
    """Interrupted mid-epoch on 2 ranks (batch 4) and resumed on 1 (batch 6), or the other way round, with 2
    workers: the two parts together are the epoch, each sample once (48 divides evenly: no padding)."""
    if direction == "2->1":
        first, rest = _two_ranks(str(train_shards), tmp_path, stop=2), _one_rank(str(train_shards), tmp_path, stop=0)
        assert len(first) == 16
    else:
        first, rest = _one_rank(str(train_shards), tmp_path, stop=3), _two_ranks(str(train_shards), tmp_path, stop=0)
        assert len(first) == 18
    assert not set(first) & set(rest) and len(first + rest) == len(set(first + rest)) == 48
    assert json.loads((tmp_path / "state.json").read_text())["samples"] == 48  # the epoch is complete
