"""Training end to end on CPU: resume exactness, a real 2-process DDP step, proof that the model learns, and the
run's shape as a user sees it (steps asked = steps done, checkpoints kept, Ctrl-C, resume with another batch size)."""

import dataclasses
import json
import os
import shutil
import signal

import pytest
import torch
import torch.multiprocessing as mp

import models.train as train_module
from models.evaluate import evaluate_checkpoint, results_path, shards_label
from loaders import LoaderConfig
from models.config import default_loader, layout_changes
from models.train import TrainConfig, config_from_args, main, make_parser, train

from ..helpers import free_port, one_line


def _cfg(shards, out, **kw):
    """A small run's TrainConfig; `kw` may name fields of TrainConfig and of its LoaderConfig."""
    loader = {"batch_size": 8, "num_workers": 0, "decode_threads": 1, "drop_last": True}
    loader.update((k, kw.pop(k)) for k in list(kw) if k in {f.name for f in dataclasses.fields(LoaderConfig)})
    base = dict(train_shards=str(shards), out=str(out), arch="resnet18", pretrained=False, warmup_steps=2,
                log_every=1, progress=False, epochs=2)
    return TrainConfig(**{**base, **kw}, loader=LoaderConfig(**loader))


def _records(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _losses(out):
    records = _records(out)
    steps = [r["step"] for r in records]
    assert len(steps) == len(set(steps)), f"duplicate steps in metrics.jsonl: {steps}"
    return {r["step"]: r["loss"] for r in records}


def _step_of(checkpoint):
    return torch.load(checkpoint, weights_only=True)["step"]


def _cli(shards, out, *extra):
    return ["--train-shards", str(shards), "--out", str(out), "--arch", "resnet18", "--no-pretrained",
            "--batch-size", "8", "--num-workers", "0", "--decode-threads", "1", "--log-every", "1", "--quiet",
            *map(str, extra)]


@pytest.mark.slow
def test_resume_gives_the_same_next_steps(tmp_path, small_shards):
    a = tmp_path / "a"
    train(_cfg(small_shards, a, max_steps=8, checkpoint_every=2, keep_checkpoints=4))
    full = _losses(a)
    assert len(full) == 8 and (a / "step-00000004.pt").is_file() and (a / "latest.pt").is_file()
    b = tmp_path / "b"
    b.mkdir()
    shutil.copy(a / "step-00000004.pt", b / "start.pt")
    summary = train(_cfg(small_shards, b, max_steps=8, checkpoint_every=2, resume=str(b / "start.pt")))
    resumed = _losses(b)
    assert summary["steps"] == 8 and sorted(resumed) == [5, 6, 7, 8]  # crosses the epoch boundary (6 steps)
    for step in resumed:
        assert resumed[step] == pytest.approx(full[step], abs=1e-5)



def _ddp_worker(rank, world, port, shards, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    summary = train(_cfg(shards, out, max_steps=2, device="cpu", checkpoint_every=100))
    from models.train import dist

    checksum = sum(p.sum().item() for p in torch.load(f"{out}/latest.pt", weights_only=True)["model"].values()
                   if torch.is_tensor(p) and p.is_floating_point()) if rank == 0 else None
    with open(f"{out}/rank{rank}.json", "w") as fh:
        json.dump({"steps": summary["steps"], "checksum": checksum}, fh)
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_process_gloo_ddp_training_step(tmp_path, train_shards):
    out = tmp_path / "ddp"
    out.mkdir()
    mp.spawn(_ddp_worker, args=(2, free_port(), str(train_shards), str(out)), nprocs=2, join=True)
    r0, r1 = (json.loads((out / f"rank{i}.json").read_text()) for i in range(2))
    assert r0["steps"] == r1["steps"] == 2 and r0["checksum"] is not None


def test_cli_smoke_run_and_offline_weights_error(tmp_path, train_shards, capsys, monkeypatch):
    assert main(["--train-shards", str(train_shards), "--out", str(tmp_path / "c"), "--arch", "resnet18",
                 "--no-pretrained", "--batch-size", "8", "--max-steps", "1", "--num-workers", "0", "--quiet"]) == 0
    assert '"steps": 1' in capsys.readouterr().out
    import models.nets.image_encoder as ie

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(ie, "reachable", lambda url, timeout=3.0: False)
    assert main(["--train-shards", str(train_shards), "--out", str(tmp_path / "d"), "--max-steps", "1",
                 "--batch-size", "8", "--num-workers", "0", "--quiet"]) == 2
    assert "--no-pretrained" in capsys.readouterr().err


@pytest.fixture(scope="module")
def learning_shards(tmp_path_factory, tiny_encoder):
    from shardgen.sharding.pipeline import BuildConfig, build_shards
    from shardgen.sources.synthetic import make_sample

    root = make_sample(tmp_path_factory.mktemp("learn") / "coco", images=320, val_images=80, seed=3, workers=2)
    out = {}
    for split in ("train", "val"):
        out[split] = tmp_path_factory.mktemp("learn") / split
        build_shards(BuildConfig(coco_root=root, split=split, out=out[split], text_encoder=str(tiny_encoder),
                                 image_size=32, samples_per_shard=40, workers=2, progress=False))
    return out


@pytest.mark.slow
def test_the_model_learns_recall_well_above_chance(tmp_path, learning_shards):
    """The wiring proof: images whose captions describe them, a random-init text tower, a small trunk. 32 px and
    4 epochs (40 steps): colours and shapes survive at 32 px, and the run is ~40 s instead of 170 s at 64 px and
    6 epochs (Recall@5 there 0.28 / 0.35; here 0.23 / 0.28, against 0.16 needed)."""
    out = tmp_path / "learn"
    torch.manual_seed(0)
    train(_cfg(learning_shards["train"], out, batch_size=32, epochs=4, lr_head=1e-3, lr_trunk=1e-3,
               warmup_steps=10, checkpoint_every=1000, decode_threads=2))
    result = evaluate_checkpoint(out / "latest.pt", str(learning_shards["val"]))
    chance = 5 / 80
    print(f"Recall@5 text→image {result['text_to_image_R@5']:.3f}, image→text {result['image_to_text_R@5']:.3f}, "
          f"chance {chance:.3f}")
    assert result["text_to_image_R@5"] > 2.5 * chance
    assert result["image_to_text_R@5"] > 2.5 * chance
    assert json.loads(results_path(out, str(learning_shards["val"])).read_text())["n_images"] == 80


@pytest.mark.slow
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
    result = json.loads(results_path(run, str(train_shards)).read_text())
    assert result["n_images"] == 48 and 0 <= result["text_to_image_R@5"] <= 1 and result["step"] == 1
    for name, rows in (("text_to_image", 2), ("image_to_text", 2), ("unseen_images", 3)):
        with Image.open(run / f"{name}-{shards_label(str(train_shards))}.png") as img:
            assert img.size[1] > rows * 128  # one row per query, each with thumbnails/captions


@pytest.mark.slow
def test_max_steps_wins_over_epochs_and_k_checkpoints_are_kept(tmp_path, small_shards, capsys):
    out = tmp_path / "smoke"
    assert main(_cli(small_shards, out, "--epochs", 1, "--max-steps", 20, "--checkpoint-every", 6,
                     "--keep-checkpoints", 2, "--warmup-steps", 500)) == 0
    err = capsys.readouterr().err
    records = {r["step"]: r for r in _records(out)}
    assert sorted(records) == list(range(1, 21))  # 20 steps asked, 20 done: across 4 epochs of 6 steps
    assert records[6]["epoch"] == 0 and records[7]["epoch"] == 1 and records[20]["epoch"] == 3
    assert sorted(p.name for p in out.glob("*.pt")) == ["latest.pt", "step-00000018.pt", "step-00000020.pt"]
    assert _step_of(out / "latest.pt") == 20
    # warmup clipped to a tenth of the run: the first step runs at half the rate, the second at the full rate
    assert records[1]["lr_head"] == pytest.approx(0.5e-3) and records[2]["lr_head"] == pytest.approx(1e-3)
    params = json.loads((out / "params.json").read_text())
    assert params["total_steps"] == 20 and params["warmup_steps"] == 2 and params["config"]["max_steps"] == 20
    assert "train: 20 steps (--max-steps 20" in err and "--warmup-steps 500 clipped" in err
    assert "train: 20 steps" in (out / "train.log").read_text()


def test_help_shows_the_defaults_and_main_returns_its_codes(capsys):
    assert main(["--help"]) == 0  # main(argv) returns, as shardgen's does: argparse's SystemExit stays inside
    text = " ".join(capsys.readouterr().out.split())
    assert main(["--out", "o", "--no-such-option"]) == 2
    assert "the following arguments are required: --train-shards" in capsys.readouterr().err
    assert f"(default: {default_loader().batch_size})" in text and "(default: resnet50)" in text


def test_the_options_are_the_configs_fields_with_their_defaults(capsys):
    base = ["--train-shards", "s", "--out", "o"]
    assert config_from_args(make_parser().parse_args(base)) == TrainConfig(train_shards="s", out="o")
    cfg = config_from_args(make_parser().parse_args(base + [
        "--batch-size", "8", "--num-workers", "0", "--decode-threads", "1", "--random-crop", "--seed", "3",
        "--no-pretrained", "--quiet", "--max-steps", "5"]))
    assert cfg.loader == LoaderConfig(batch_size=8, num_workers=0, decode_threads=1, crop="random", flip=True, seed=3,
                                      drop_last=True)
    assert (cfg.batch_size, cfg.seed, cfg.pretrained, cfg.progress, cfg.max_steps) == (8, 3, False, False, 5)
    cfg = config_from_args(make_parser().parse_args(base + [
        "--decode", "gpu", "--synthetic", "--compile", "--tensorboard", "--precision", "fp32", "--resume", "r"]))
    assert (cfg.loader.decode, cfg.synthetic, cfg.compile, cfg.tensorboard, cfg.precision, cfg.resume) == \
        ("gpu", True, True, True, "fp32", "r")
    assert main(base + ["--num-workers", "-1"]) == 2  # checked once, by LoaderConfig, named by its option
    assert one_line(capsys.readouterr().err) == "train: error: --num-workers must be >= 0, got -1"
    assert main(base + ["--log-every", "0"]) == 2
    assert one_line(capsys.readouterr().err) == "train: error: --log-every must be >= 1, got 0"


def _interrupt_at(monkeypatch, k, *, signal_during=False):
    """Ctrl-C at step k+1: raised before it (a hook) or delivered as SIGINT while it runs."""
    real, calls = train_module.train_step, []

    def step(*args, **kwargs):
        calls.append(1)
        if len(calls) == k + 1:
            if not signal_during:
                raise KeyboardInterrupt
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_step", step)
    return real


@pytest.mark.slow
def test_ctrl_c_checkpoints_the_current_step_and_resume_logs_no_step_twice(tmp_path, small_shards, capsys,
                                                                          monkeypatch):
    out = tmp_path / "run"
    real = _interrupt_at(monkeypatch, 5)
    args = _cli(small_shards, out, "--max-steps", 9, "--checkpoint-every", 4, "--keep-checkpoints", 5)
    assert main(args) == 130
    err = capsys.readouterr().err
    assert f"train: interrupted at step 5; checkpoint {out / 'latest.pt'}; resume with --resume {out}" in err
    assert "Traceback" not in err and _step_of(out / "latest.pt") == 5
    monkeypatch.setattr(train_module, "train_step", real)
    assert main(args + ["--resume", str(out)]) == 0
    assert "resumed from step 5 (epoch 0, sample 40)" in capsys.readouterr().err
    first = _losses(out)
    assert sorted(first) == list(range(1, 10))
    # from an older checkpoint: the records of steps 5..9 are dropped and written again, once
    assert main(args + ["--resume", str(out / "step-00000004.pt")]) == 0
    again = _losses(out)
    assert sorted(again) == list(range(1, 10))
    assert again == pytest.approx(first, abs=1e-5)


@pytest.mark.slow
def test_sigint_during_a_step_lands_after_it(tmp_path, small_shards, capsys, monkeypatch):
    _interrupt_at(monkeypatch, 2, signal_during=True)
    out = tmp_path / "run"
    assert main(_cli(small_shards, out, "--max-steps", 6)) == 130
    assert "interrupted at step 3;" in capsys.readouterr().err
    assert _step_of(out / "latest.pt") == 3 and sorted(_losses(out)) == [1, 2, 3]


@pytest.mark.slow
def test_resume_with_another_batch_size_reads_the_rest_of_the_epoch_and_ends_on_time(tmp_path, small_shards,
                                                                                  capsys, monkeypatch):
    """Interrupted after 3 steps of 8 in a 2-epoch run and resumed with batches of 16: the rest of epoch 0 is the
    24 samples not seen yet (one batch of 16; drop_last leaves 8), epoch 1 has 3 steps, the run ends after them."""
    real, seen = _interrupt_at(monkeypatch, 3), []
    out = tmp_path / "run"
    assert main(_cli(small_shards, out, "--epochs", 2)) == 130
    monkeypatch.setattr(train_module, "train_step", lambda run, batch, **kw: seen.append(batch["image_id"].tolist())
                        or real(run, batch, **kw))
    main(_cli(small_shards, tmp_path / "full", "--max-steps", 3))  # the same first 3 steps, recorded
    first = [i for b in seen for i in b]
    seen.clear()
    capsys.readouterr()
    assert main(_cli(small_shards, out, "--epochs", 2, "--batch-size", 16, "--resume", out)) == 0
    err = capsys.readouterr().err
    assert ("resumed from step 3 (epoch 0, sample 24)" in err and "changed: batch size 8 → 16: the epoch's 1 "
            "remaining batches" in err)
    # the start line describes the rest of the run, not a fresh one
    assert "(--epochs 2: 1 steps to finish epoch 0, then 1 × 3 steps; 4 steps from step 3)" in err
    assert [len(b) for b in seen] == [16] * 4 and sorted(_losses(out)) == list(range(1, 8))
    rest = seen[0]
    assert not set(first) & set(rest) and len(set(first + rest)) == 40  # the epoch's other samples, once
    assert len(set(seen[1] + seen[2] + seen[3])) == 48  # then the whole of epoch 1
    loader_state = torch.load(out / "latest.pt", weights_only=True)["loader"]
    assert loader_state["epoch"] == 1 and loader_state["samples"] == 48


def test_resume_errors_are_one_line(tmp_path, small_shards, capsys):
    run = tmp_path / "run"
    assert main(_cli(small_shards, run, "--max-steps", 1)) == 0
    capsys.readouterr()
    cases = [
        (["--arch", "resnet50", "--resume", run], "trained with --arch resnet18, this run asks for --arch resnet50"),
        (["--resume", tmp_path / "nothere"], "nothere: no such checkpoint"),
        ([], "already holds a run's checkpoints: pass --resume"),
    ]
    for extra, message in cases:
        assert main(_cli(small_shards, run, "--max-steps", 2, *extra)) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err and "Traceback" not in err
    (run / "latest.pt").write_bytes(b"PK\x03\x04")  # a hard link: the step file is damaged too
    assert main(_cli(small_shards, run, "--max-steps", 2, "--resume", run / "latest.pt")) == 2
    err = capsys.readouterr().err.strip()
    assert "latest.pt: not a readable checkpoint (truncated or corrupt" in err and "\n" not in err


def test_resume_from_a_crafted_checkpoint_is_refused(tmp_path, small_shards, capsys):
    target = tmp_path / "created-by-the-pickle"

    class Touch:
        def __reduce__(self):
            return __import__("pathlib").Path.touch, (target,)

    torch.save({"model": Touch(), "config": {"arch": "resnet18"}, "step": 1}, tmp_path / "evil.pt")
    assert main(_cli(small_shards, tmp_path / "run", "--max-steps", 1, "--resume", tmp_path / "evil.pt")) == 2
    err = capsys.readouterr().err.strip()
    assert "evil.pt: refused to load" in err and "\n" not in err and not target.exists()


def test_the_resume_line_names_a_world_size_change():
    was = {"world_size": 2, "batch_size": 8, "workers": 2}
    assert layout_changes(was, world=1, batch_size=8, workers=2) == ["world size 2 → 1"]
    assert layout_changes(was, world=2, batch_size=8, workers=2) == []
