"""Training end to end on CPU: resume exactness, a real 2-process DDP step, and proof that the model learns."""

import json
import os
import shutil
import socket

import pytest
import torch
import torch.multiprocessing as mp

from models.evaluate import evaluate_checkpoint
from models.train import TrainConfig, main, train


def _cfg(shards, out, **kw):
    base = dict(train_shards=str(shards), out=str(out), arch="resnet18", pretrained=False, batch_size=8,
                num_workers=0, decode_threads=1, warmup_steps=2, log_every=1, progress=False, epochs=2)
    return TrainConfig(**{**base, **kw})


def _losses(out):
    return {r["step"]: r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())}


def test_resume_gives_the_same_next_steps(tmp_path, train_shards):
    a = tmp_path / "a"
    train(_cfg(train_shards, a, max_steps=8, checkpoint_every=2))
    full = _losses(a)
    assert len(full) == 8 and (a / "step-00000004.pt").is_file() and (a / "latest.pt").is_file()
    b = tmp_path / "b"
    b.mkdir()
    shutil.copy(a / "step-00000004.pt", b / "start.pt")
    summary = train(_cfg(train_shards, b, max_steps=8, checkpoint_every=2, resume=str(b / "start.pt")))
    resumed = _losses(b)
    assert summary["steps"] == 8 and sorted(resumed) == [5, 6, 7, 8]  # crosses the epoch boundary (6 steps)
    for step in resumed:
        assert resumed[step] == pytest.approx(full[step], abs=1e-5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, shards, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    summary = train(_cfg(shards, out, max_steps=2, device="cpu", checkpoint_every=100))
    from models.train import dist

    checksum = sum(p.sum().item() for p in torch.load(f"{out}/latest.pt", weights_only=False)["model"].values()
                   if torch.is_tensor(p) and p.is_floating_point()) if rank == 0 else None
    with open(f"{out}/rank{rank}.json", "w") as fh:
        json.dump({"steps": summary["steps"], "checksum": checksum}, fh)
    dist.destroy_process_group()


def test_two_process_gloo_ddp_training_step(tmp_path, train_shards):
    out = tmp_path / "ddp"
    out.mkdir()
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(train_shards), str(out)), nprocs=2, join=True)
    r0, r1 = (json.loads((out / f"rank{i}.json").read_text()) for i in range(2))
    assert r0["steps"] == r1["steps"] == 2 and r0["checksum"] is not None


def test_cli_smoke_run_and_offline_weights_error(tmp_path, train_shards, capsys, monkeypatch):
    assert main(["--train-shards", str(train_shards), "--out", str(tmp_path / "c"), "--arch", "resnet18",
                 "--no-pretrained", "--batch-size", "8", "--max-steps", "1", "--num-workers", "0", "--quiet"]) == 0
    assert '"steps": 1' in capsys.readouterr().out
    import models.image_encoder as ie

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(ie, "reachable", lambda url, timeout=3.0: False)
    assert main(["--train-shards", str(train_shards), "--out", str(tmp_path / "d"), "--max-steps", "1",
                 "--num-workers", "0", "--quiet"]) == 2
    assert "--no-pretrained" in capsys.readouterr().err


@pytest.fixture(scope="module")
def learning_shards(tmp_path_factory, tiny_encoder):
    from shardgen.build import BuildConfig, build_shards
    from shardgen.sample import make_sample

    root = make_sample(tmp_path_factory.mktemp("learn") / "coco", images=320, val_images=80, seed=3, workers=2)
    out = {}
    for split in ("train", "val"):
        out[split] = tmp_path_factory.mktemp("learn") / split
        build_shards(BuildConfig(coco_root=root, split=split, out=out[split], text_encoder=str(tiny_encoder),
                                 image_size=64, samples_per_shard=40, workers=2, progress=False))
    return out


def test_the_model_learns_recall_well_above_chance(tmp_path, learning_shards):
    """The wiring proof: images whose captions describe them, a random-init text tower, a small trunk."""
    out = tmp_path / "learn"
    torch.manual_seed(0)
    train(_cfg(learning_shards["train"], out, batch_size=32, epochs=6, lr_head=1e-3, lr_trunk=1e-3,
               warmup_steps=10, checkpoint_every=1000, decode_threads=2))
    result = evaluate_checkpoint(out / "latest.pt", str(learning_shards["val"]))
    chance = 5 / 80
    print(f"Recall@5 text→image {result['text_to_image_R@5']:.3f}, image→text {result['image_to_text_R@5']:.3f}, "
          f"chance {chance:.3f}")
    assert result["text_to_image_R@5"] > 2.5 * chance
    assert result["image_to_text_R@5"] > 2.5 * chance
    assert json.loads((out / "eval.json").read_text())["n_images"] == 80


def test_evaluate_cli_writes_table_json_and_retrieval_plots(tmp_path, train_shards, sample_coco, tiny_encoder,
                                                            capsys):
    from PIL import Image

    from models.evaluate import main as evaluate

    run = tmp_path / "run"
    train(_cfg(train_shards, run, max_steps=1, checkpoint_every=100))
    unseen = tmp_path / "unseen"
    unseen.mkdir()
    for p in sorted((sample_coco / "val2014").glob("*.jpg"))[:3]:
        Image.open(p).save(unseen / p.name)
    code = evaluate(["--checkpoint", str(run), "--shards", str(train_shards), "--query", "a red circle",
                     "--query", "two shapes on grass", "--text-encoder", str(tiny_encoder), "--unseen", str(unseen),
                     "--show-images", "2"])
    out = capsys.readouterr().out
    assert code == 0 and "text → image" in out and "48 images" in out
    result = json.loads((run / "eval.json").read_text())
    assert result["n_images"] == 48 and 0 <= result["text_to_image_R@5"] <= 1
    for name, rows in (("text_to_image.png", 2), ("image_to_text.png", 2), ("unseen_images.png", 3)):
        with Image.open(run / name) as img:
            assert img.size[1] > rows * 128  # one row per query, each with thumbnails/captions
