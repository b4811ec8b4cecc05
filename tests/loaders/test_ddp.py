"""A real 2-process torch.distributed (gloo) run: ranks detect themselves, yield equal batch counts, cover once."""

import json
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def test_two_process_gloo_epoch(tmp_path, train_shards):
    mp.spawn(_worker, args=(2, _free_port(), str(train_shards), str(tmp_path)), nprocs=2, join=True)
    r = [json.loads((tmp_path / f"rank{i}.json").read_text()) for i in range(2)]
    assert r[0]["batches"] == r[1]["batches"] == r[0]["len"] == 6
    keys = r[0]["keys"] + r[1]["keys"]
    assert len(keys) == 48 and len(set(keys)) == 48
