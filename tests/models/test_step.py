"""The training step on the device: no host reads between logged steps, `--precision` (and checkpoints across it),
`--compile`, `--synthetic` input and the data-wait share. CPU here; the CUDA variants run in `make gpu-check`."""

import json

import pytest
import torch

import models.train as train_module
from models.runs.metrics_log import Throughput
from models.training.step import TrainState, resolve_precision
from loaders import LoaderConfig
from models.train import TrainConfig, main, train

HOST_READS = ("item", "tolist", "numpy", "cpu", "__float__", "__int__", "__bool__")
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _cfg(shards, out, **kw):
    base = dict(train_shards=str(shards), out=str(out), arch="resnet18", pretrained=False, warmup_steps=2,
                log_every=1, progress=False, max_steps=2, checkpoint_every=1000)
    return TrainConfig(**{**base, **kw}, loader=LoaderConfig(batch_size=8, num_workers=0, decode_threads=1,
                                                             drop_last=True))


def _records(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _count_reads_per_step(monkeypatch) -> dict[int, list[str]]:
    """Host reads of tensors (`.item()`, `float(t)`, `.cpu()`, ...) by the training step they happen in. On the
    CPU every tensor is a host tensor, so this counts what on CUDA would each wait for the device."""
    reads: dict[int, list[str]] = {}
    step = [0]
    real_step = train_module.train_step

    def counted_step(*args, **kwargs):
        step[0] += 1
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_step", counted_step)
    for name in HOST_READS:
        real = getattr(torch.Tensor, name)

        def wrapper(self, *args, _real=real, _name=name, **kwargs):
            reads.setdefault(step[0], []).append(_name)
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, wrapper)
    return reads


@pytest.mark.slow
def test_synthetic_steps_read_neither_the_shards_nor_the_device_between_log_steps(tmp_path, small_shards,
                                                                                   monkeypatch):
    """Synthetic input is made on the device, so any host read counted here is the loop's own."""
    from loaders import ShardLoader

    def no_reading(self):
        raise AssertionError("--synthetic read the shards")

    monkeypatch.setattr(ShardLoader, "__iter__", no_reading)
    reads = _count_reads_per_step(monkeypatch)
    out = tmp_path / "run"
    summary = train(_cfg(small_shards, out, synthetic=True, max_steps=8, log_every=4))  # an epoch is 6 steps
    monkeypatch.undo()
    quiet = {step: names for step, names in reads.items() if step not in (0, 4, 8)}  # 0: set-up
    assert quiet == {}, f"host reads on steps that do not log: {quiet}"
    assert reads.get(4), "the counter saw no read on a logged step: it counts nothing"
    records = _records(out)
    assert summary["steps"] == 8 and [(r["step"], r["epoch"]) for r in records] == [(4, 0), (8, 1)]
    assert all(0 <= r["data_wait"] <= 1 and r["samples_per_s"] > 0 for r in records)


def test_synthetic_batches_are_shaped_like_the_loaders(tmp_path, small_shards):
    from loaders import make_loader
    from models.train import synthetic_like

    loader = make_loader(str(small_shards), batch_size=8, drop_last=True)
    synthetic = synthetic_like(loader, _cfg(small_shards, tmp_path), torch.device("cpu"))
    real = next(iter(loader))
    fake = next(iter(synthetic))
    for key in ("image", "text_embedding"):
        assert (fake[key].shape, fake[key].dtype, fake[key].stride()) == \
            (real[key].shape, real[key].dtype, real[key].stride()), key
    assert torch.allclose(fake["text_embedding"].norm(dim=-1), torch.ones(8))
    assert len(synthetic) == len(loader) and synthetic.samples_per_epoch == loader.samples_per_epoch
    synthetic.set_epoch(1, skip_batches=len(loader) - 1)
    assert len(list(synthetic)) == 1 and len(list(synthetic)) == len(loader)  # a resumed epoch, then a whole one


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
@pytest.mark.parametrize("synthetic", [True, False])
def test_cuda_steps_never_sync(tmp_path, small_shards, monkeypatch, precision, synthetic):
    """After two warm-up steps, CUDA's sync debug mode raises on any synchronizing call outside logging."""
    real_step, real_log, calls = train_module.train_step, train_module.log_step, []

    def step(*args, **kwargs):
        calls.append(1)
        if len(calls) > 2:
            torch.cuda.set_sync_debug_mode("error")
        return real_step(*args, **kwargs)

    def log(*args, **kwargs):
        torch.cuda.set_sync_debug_mode("default")
        return real_log(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_step", step)
    monkeypatch.setattr(train_module, "log_step", log)
    try:
        summary = train(_cfg(small_shards, tmp_path / "run", device="cuda", precision=precision,
                             synthetic=synthetic, max_steps=10, log_every=5))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert summary["steps"] == 10 and summary["last_loss"] == summary["last_loss"]  # not NaN


def test_precision_choices():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    with pytest.raises(ValueError, match="precision must be one of"):
        TrainConfig(train_shards="x", out="y", precision="fp8")


def test_fp16_on_the_cpu_is_a_one_line_error(tmp_path, small_shards, capsys):
    args = ["--train-shards", str(small_shards), "--out", str(tmp_path / "r"), "--arch", "resnet18",
            "--no-pretrained", "--batch-size", "8", "--num-workers", "0", "--max-steps", "1", "--quiet"]
    assert main(args + ["--precision", "fp16"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--precision fp16 needs a CUDA device" in err and "\n" not in err


def _resume_across(tmp_path, shards, first: str, then: str, device: str = "cpu", steps: int = 2):
    out = tmp_path / f"{first}-{then}"
    train(_cfg(shards, out, precision=first, device=device, max_steps=steps))
    summary = train(_cfg(shards, out, precision=then, device=device, max_steps=2 * steps, resume=str(out)))
    records = _records(out)
    assert summary["steps"] == 2 * steps and [r["step"] for r in records] == list(range(1, 2 * steps + 1))
    assert all(0 < r["loss"] < 10 for r in records[steps:])
    if then != "fp16":  # fp16 may skip a step whose scaled gradients overflow (grad_norm inf) while it finds its scale
        assert all(r["grad_norm"] < float("inf") for r in records[steps:])
    log = (out / "train.log").read_text().splitlines()
    assert [line.split("precision ")[1].split(",")[0] for line in log if "precision " in line] == [first, then]
    return records


@pytest.mark.slow
def test_bf16_steps_run_and_their_checkpoint_resumes_in_fp32(tmp_path, small_shards):
    records = _resume_across(tmp_path, small_shards, "bf16", "fp32", steps=1)
    assert 0 < records[0]["loss"] < 10


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("first,then", [("fp16", "bf16"), ("bf16", "fp16"), ("fp16", "fp16")])
def test_cuda_resume_across_precisions(tmp_path, small_shards, first, then):
    _resume_across(tmp_path, small_shards, first, then, device="cuda")
    state = torch.load(tmp_path / f"{first}-{then}" / "latest.pt", weights_only=True)
    assert bool(state["scaler"]) == (then == "fp16")  # the loss scale is saved when it is used


def test_an_empty_scaler_state_loads_into_an_fp16_run(tmp_path):
    """A bf16/fp32 checkpoint holds the disabled scaler's empty state; an fp16 run starts a fresh loss scale."""
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    saved = TrainState(model, opt, sched, torch.amp.GradScaler("cpu", enabled=False))
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
             "scaler": saved.scaler.state_dict(), "rng": torch.get_rng_state()}
    assert state["scaler"] == {}
    fp16 = TrainState(model, opt, sched, torch.amp.GradScaler("cpu", enabled=True, init_scale=1024.0), "fp16")
    fp16.load_state_dict(state, tmp_path / "x.pt")
    assert fp16.scaler.get_scale() == 1024.0


@pytest.mark.slow
def test_compile_wraps_the_tower_and_keeps_checkpoints_portable(tmp_path, small_shards, monkeypatch):
    """Dynamo's capture runs for real; the eager backend stands in for inductor's code generation (a minute on
    this CPU; `make gpu-check` measures inductor on the GPU)."""
    real_compile, compiled = torch.compile, []

    def eager_compile(fn, *args, **kwargs):
        compiled.append(fn)
        return real_compile(fn, *args, **{**kwargs, "backend": "eager"})

    monkeypatch.setattr(torch, "compile", eager_compile)
    out = tmp_path / "compiled"
    summary = train(_cfg(small_shards, out, compile=True, max_steps=2))
    assert summary["steps"] == 2 and len(compiled) == 1
    assert "compiled" in (out / "train.log").read_text()
    monkeypatch.undo()
    state = torch.load(out / "latest.pt", weights_only=True)
    assert not [k for k in state["model"] if "_orig_mod" in k]
    summary = train(_cfg(small_shards, out, max_steps=3, resume=str(out)))  # uncompiled, from the compiled run
    assert summary["steps"] == 3


class Clock:
    """A clock that moves only when told: the test says how long each wait and each step take."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_data_wait_is_the_share_of_time_spent_waiting_for_batches():
    clock = Clock()

    def slow_source(n, seconds):
        for i in range(n):
            clock.now += seconds  # inside next(): the time the step waits for this batch
            yield i

    for wait, work in ((0.03, 0.01), (0.0, 0.03), (0.05, 0.0)):
        meter = Throughput(clock=clock)
        for _ in meter.timed(slow_source(6, wait)):
            clock.now += work
            meter.add(1)
        reading = meter.read()
        assert reading.data_wait == pytest.approx(wait / (wait + work)), (wait, work, reading)
        assert reading.samples_per_s == pytest.approx(1 / (wait + work)), (wait, work, reading)
    clock.now += 2.0  # a reading covers the time since the previous one: here 2 s without a batch
    assert meter.read() == (0.0, 0.0)
