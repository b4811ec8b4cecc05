"""`python -m models.train`: train the image tower + projection head against frozen CLIP text embeddings.

Reads shards through `loaders.make_loader` + `loaders.DeviceLoader` (uint8 to the device, normalized there). AdamW
with separate learning rates for trunk and head, warmup + cosine, `--precision` (bf16 autocast, or fp16 with loss
scaling on GPUs without bf16) and channels-last on CUDA, gradient clipping, DDP under `torchrun`. `--max-steps`
wins over `--epochs`. The run folder (`--out`) holds `params.json` (the resolved configuration), `metrics.jsonl`
(loss, learning rates, samples/s and the share of time spent waiting for data), `train.log`, the last
`--keep-checkpoints` step checkpoints and `latest.pt`; a checkpoint stores the loader's state dict (the epoch's
position in samples of all ranks), so `--resume` continues exactly, also with another `--nproc_per_node`,
`--batch-size`, `--num-workers` or `--precision`. Ctrl-C, SIGTERM (preemption) and SIGUSR1 (SLURM's warning)
write a checkpoint at the current step and exit with one line and 128 + the signal (130, 143, 138). `--synthetic`
trains on batches made on the device: the step rate without data loading.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import NamedTuple

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from loaders import DeviceLoader, LoaderConfig
from loaders.plan.seeds import torch_seed
from shardgen.config import config_from_options
from shardgen.format import redact, redact_fields, write_text_atomic
from shardgen.format.errors import HANDLED, parser_exit_code, report

from .config import PRECISIONS, RunPlan, TrainConfig, as_sources, plan_run, resumed_plan, shards_text
from .errors import UserError
from .nets.clip import parameter_counts
from .nets.image_encoder import ARCHS
from .runs.curves import write_curves
from .runs.data import check_val_shards, open_loader, resume_loader, synthetic_like
from .runs.metrics_log import MetricsLog, Reading, RunLog, Throughput
from .runs.preflight import check_out_folder, mix_line
from .training.checkpoint import LATEST, CheckpointWriter, Position, read_resume
from .training.distributed import DistEnv, StopVote, group_lost, setup_distributed, teardown_distributed
from .training.step import StepStats, TrainState, build_run, make_autocast, train_step
from .training.stop import StopRequested, group_broke, interrupts_deferred, stop_requested, stop_signals, stopped

__all__ = ["TrainConfig", "main", "train"]


def write_params(out: Path, cfg: TrainConfig, plan: RunPlan, env: DistEnv, resumed_from: Path | None) -> None:
    """`params.json`: the configuration, resolved on these shards and machines (URLs without their passwords); a
    resume keeps the last one as `params-<n>.json`."""
    params = {"config": redact_fields(asdict(cfg)), "total_steps": plan.total_steps, "limit": plan.limit,
              "warmup_steps": plan.warmup_steps, "steps_per_epoch": plan.steps_per_epoch,
              "samples_per_epoch": plan.samples_per_epoch * env.world, "world_size": env.world,
              "device": str(env.device), "resumed_from": redact(resumed_from) if resumed_from else None}
    if resumed_from is not None and (out / "params.json").is_file():
        os.replace(out / "params.json", out / f"params-{1 + len(list(out.glob('params-*.json')))}.json")
    write_text_atomic(out / "params.json", json.dumps(params, indent=2) + "\n")


def start_line(cfg: TrainConfig, plan: RunPlan, run: TrainState, env: DistEnv) -> str:
    warmup = f"warmup {plan.warmup_steps} steps"
    if plan.warmup_steps < cfg.warmup_steps:
        warmup += f" (--warmup-steps {cfg.warmup_steps} clipped to a tenth of the run)"
    millions = parameter_counts(run.model)["trainable"] / 1e6
    extras = "".join(f", {x}" for x, on in (("compiled", cfg.compile), ("synthetic input", cfg.synthetic),
                                             ("GPU decode", cfg.loader.decode == "gpu")) if on)
    return (f"train: {plan.total_steps} steps ({plan.limit}), {plan.samples_per_epoch * env.world} samples/epoch, "
            f"{warmup}, {millions:.1f} M trainable parameters, device {env.device}, world {env.world}, "
            f"precision {run.precision}{extras}")


class Loop(NamedTuple):
    """What the loop reads and writes besides the model state."""

    loader: object  # loaders.ShardLoader or SyntheticLoader: set_epoch, batches_in_pass
    data: DeviceLoader
    plan: RunPlan
    metrics: MetricsLog | None  # rank 0 only
    save: Callable[[Position], Path | None]
    vote: StopVote  # the ranks agree after each step whether to stop


def run_steps(run: TrainState, pos: Position, loop: Loop, *, cfg: TrainConfig, env: DistEnv) -> float:
    """Train from `pos` until `plan.total_steps`; returns the last loss. `pos` advances in place. The device is
    waited for only on logged steps (reading the loss) and checkpoints."""
    from tqdm.auto import tqdm

    plan, stats, window = loop.plan, None, []
    autocast = make_autocast(run.precision, env.device)
    bar = tqdm(total=plan.total_steps, initial=pos.step, desc="train", unit="step",
               disable=not (cfg.progress and env.is_main))
    meter = Throughput()
    while pos.step < plan.total_steps:
        epoch, expected = pos.epoch, loop.loader.batches_in_pass  # the loader is at `epoch` (set or resumed)
        for batch in meter.timed(loop.data):
            with interrupts_deferred():  # a step, its log record and its checkpoint happen together or not at all
                stats = train_step(run, batch, autocast=autocast, grad_clip=cfg.grad_clip)
                window.append(stats.loss)
                pos.advance()
                meter.add(cfg.batch_size * env.world)
                bar.update(1)
                if pos.step % cfg.log_every == 0 or pos.step == plan.total_steps:
                    log_step(loop.metrics, bar, stats, window, step=pos.step, epoch=epoch, run=run,
                             reading=meter.read())
                    window = []
                if pos.step % cfg.checkpoint_every == 0:
                    loop.save(pos)
                signum = loop.vote.agreed(stop_requested())  # every rank stops after the same step
                if signum:
                    raise StopRequested(signum)
            if pos.step >= plan.total_steps:
                break
        else:
            if pos.batches != expected:
                raise RuntimeError(f"the loader ended epoch {epoch} after {pos.batches} of {expected} batches")
            pos.next_epoch()
            loop.loader.set_epoch(pos.epoch)
    bar.close()
    return stats.loss.item() if stats else float("nan")


def log_step(metrics: MetricsLog | None, bar, stats: StepStats, window: list[torch.Tensor], *, step: int,
             epoch: int, run: TrainState, reading: Reading) -> None:
    """The one host sync of a logged step: this step's loss and gradient norm, the mean loss since the last
    record (`loss_avg`) and the temperature, read from the device together."""
    values = torch.stack([stats.loss.float(), stats.grad_norm.float(), torch.stack(window).float().mean(),
                          run.model.scale().detach().float()]).tolist()
    loss, grad_norm, loss_avg, logit_scale = values
    bar.set_postfix(loss=f"{loss:.3f}", lr=f"{stats.lr_head:.2e}", sps=f"{reading.samples_per_s:.0f}",
                    data_wait=f"{reading.data_wait:.0%}")
    if metrics:
        metrics.write({"step": step, "epoch": epoch, "loss": loss, "grad_norm": grad_norm, "lr_trunk": stats.lr_trunk,
                       "lr_head": stats.lr_head, "loss_avg": loss_avg, "logit_scale": logit_scale,
                       "samples_per_s": reading.samples_per_s, "data_wait": reading.data_wait})


def evaluate_and_draw(out: Path, cfg: TrainConfig, env: DistEnv) -> dict:
    """Rank 0 after the last step: Recall@K on `--val-shards` (if given), then `curves.png`, which shows it."""
    if not env.is_main:
        return {}
    from .evaluate import evaluate_checkpoint

    results = [evaluate_checkpoint(out / LATEST, val, device=str(env.device), flag="--val-shards")
               for val in cfg.val_sets]
    done = {} if not results else {"eval": results[0]} if len(results) == 1 else {"eval": results}
    return {**done, "curves": str(write_curves(out, tensorboard=cfg.tensorboard))}


def train(cfg: TrainConfig) -> dict:
    """Run training; returns a summary (steps, last loss, checkpoint path, eval results if val shards given).

    Raises UserError subclasses for unusable input, TrainingInterrupted after a checkpoint on Ctrl-C, SIGTERM or
    SIGUSR1 (`stop.STOP_SIGNALS`: one handler for the three; under torchrun the ranks agree to stop after the same
    step, see `training/stop.py`), ProcessGroupLost when a rank is gone first (the last checkpoint is kept)."""
    with stop_signals(record_only=int(os.environ.get("WORLD_SIZE", "1")) > 1):
        return _train(cfg)


def _train(cfg: TrainConfig) -> dict:
    torch.manual_seed(torch_seed("model", cfg.seed))  # the `model` stream (loaders.plan.seeds)
    out = Path(cfg.out)
    check_out_folder(out, fresh=not cfg.resume)
    env = setup_distributed(cfg.device)
    loader = open_loader(cfg)
    warnings = check_val_shards(cfg, loader)
    plan = plan_run(cfg, steps_per_epoch=len(loader), samples_per_epoch=loader.samples_per_epoch)
    state, resumed_from = read_resume(cfg) if cfg.resume else (None, None)
    if state is not None:
        pos, resumed_line = resume_loader(loader, state, resumed_from, env, named=shards_text(cfg.train_shards))
        plan = resumed_plan(plan, cfg, pos, loader)
    else:
        pos, resumed_line = Position(), ""
        loader.set_epoch(0)
    run = build_run(cfg, plan, env, embed_dim=loader.embed_dim)
    if state is not None:
        run.load_state_dict(state, resumed_from)
    run.ddp = DistributedDataParallel(run.model) if env.world > 1 else run.model
    out.mkdir(parents=True, exist_ok=True)
    log = RunLog(out / "train.log" if env.is_main else None)
    writer = CheckpointWriter(out, keep=cfg.keep_checkpoints) if env.is_main else None
    metrics = MetricsLog(out / "metrics.jsonl", start_step=pos.step, tensorboard=cfg.tensorboard) \
        if env.is_main else None
    if env.is_main:
        write_params(out, cfg, plan, env, resumed_from)
        notes = [mix_line(loader) if loader.sources else "", *(f"warning: {w}" for w in warnings), resumed_line]
        for line in (start_line(cfg, plan, run, env), *(f"train: {note}" for note in notes if note)):
            log.say(line)

    def save(at: Position) -> Path | None:  # `at.batches`: the device loader may hold one batch more than used
        return writer.save(run.state_dict(at, cfg, source.state_dict(batches=at.batches)), step=at.step) \
            if writer else None

    source = synthetic_like(loader, cfg, env.device) if cfg.synthetic else loader
    data = DeviceLoader(source, env.device, channels_last=cfg.channels_last and env.device.type == "cuda")
    try:
        last_loss = run_steps(run, pos, Loop(source, data, plan, metrics, save, StopVote(env)), cfg=cfg, env=env)
    except KeyboardInterrupt as exc:
        stop = stopped(exc, pos, writer, save, cfg.out)
        log.record(f"train: {stop}")  # the stop line (the same line on stderr is the exit's, `report`)
        raise stop from None
    except RuntimeError as exc:  # only a collective that failed for a lost rank; anything else keeps its traceback
        if env.world == 1 or not group_lost(exc):
            raise
        raise group_broke(exc, pos, env, out) from None
    finally:
        source.close()  # the loader's worker processes, now rather than when collected
        if metrics:
            metrics.close()
    ckpt = None
    if writer:  # the end of the run, unless the last step was just saved
        ckpt = save(pos) if writer.saved_step != pos.step else out / LATEST
    summary = {"steps": pos.step, "last_loss": last_loss, "checkpoint": str(ckpt) if ckpt else None}
    log.say(f"train: done at step {pos.step}, last loss {last_loss:.4f}, checkpoint {ckpt}")
    summary.update(evaluate_and_draw(out, cfg, env))
    if dist.is_initialized():
        dist.barrier()
    return summary


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after each option that takes a value (not after flags); the description kept as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.nargs == 0 or action.default is None:  # flags (store_true/false/const), no default
            return action.help or ""
        return super()._get_help_string(action)


def make_parser() -> argparse.ArgumentParser:
    """The options: each `dest` is a field of `TrainConfig` or of its `LoaderConfig`, each default read off them."""
    d = TrainConfig(train_shards="", out="")
    p = argparse.ArgumentParser(prog="python -m models.train", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--train-shards", required=True, nargs="+", metavar="SHARDS",
                   help="shard folder/URL with manifest.json (or brace pattern); several: mixed by --train-weights, "
                        "else concatenated")
    p.add_argument("--train-weights", dest="train_weights", type=float, nargs="+", default=d.loader.weights,
                   metavar="W", help="each --train-shards set's share of an epoch (e.g. 0.7 0.3); a set shorter "
                                     "than its share cycles")
    p.add_argument("--epoch-samples", dest="epoch_samples", type=int, default=d.loader.epoch_samples, metavar="N",
                   help="samples per epoch, over all ranks, of mixed --train-shards (default: all their samples)")
    p.add_argument("--val-shards", nargs="+", default=d.val_shards, metavar="SHARDS",
                   help="evaluate Recall@K on these shards at the end (several: one evaluation each)")
    p.add_argument("--out", required=True, help="run folder: checkpoints, params.json, metrics.jsonl, eval results")
    p.add_argument("--epochs", type=int, default=d.epochs, help="passes over the shards (unless --max-steps)")
    p.add_argument("--max-steps", type=int, default=d.max_steps,
                   help="stop after N optimizer steps; wins over --epochs (training continues across epochs)")
    p.add_argument("--batch-size", type=int, default=d.loader.batch_size, help="per process (per GPU)")
    p.add_argument("--lr-head", type=float, default=d.lr_head, help="peak learning rate of the projection head")
    p.add_argument("--lr-trunk", type=float, default=d.lr_trunk, help="peak learning rate of the ResNet trunk")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help="AdamW, on weights only")
    p.add_argument("--warmup-steps", type=int, default=d.warmup_steps,
                   help="linear warmup, clipped to a tenth of the run")
    p.add_argument("--grad-clip", type=float, default=d.grad_clip, help="max gradient norm")
    p.add_argument("--arch", choices=list(ARCHS), default=d.arch, help="resnet18 only for CPU smoke runs and tests")
    p.add_argument("--no-pretrained", dest="pretrained", action="store_false", default=d.pretrained,
                   help="random-init trunk (no ImageNet weights)")
    p.add_argument("--weights", default=d.weights, help="local ImageNet state dict for the trunk (offline)")
    p.add_argument("--num-workers", type=int, default=d.loader.num_workers, help="loader worker processes")
    p.add_argument("--decode-threads", type=int, default=d.loader.decode_threads,
                   help="JPEG decode threads per worker (default: CPUs / workers)")
    p.add_argument("--random-crop", dest="crop", action="store_const", const="random", default=d.loader.crop,
                   help="random crop + flip (needs --no-crop shards)")
    p.add_argument("--seed", type=int, default=d.loader.seed, help="model init, shuffling and augmentation")
    p.add_argument("--device", default=d.device, help="auto = CUDA, else Apple MPS (untested), else CPU")
    p.add_argument("--precision", choices=PRECISIONS, default=d.precision,
                   help="auto: bf16 on GPUs with native bf16, else fp16 with loss scaling; fp32 on the CPU")
    p.add_argument("--compile", action="store_true", default=d.compile,
                   help="torch.compile the image tower (slow first steps)")
    p.add_argument("--synthetic", action="store_true", default=d.synthetic,
                   help="train on random batches made on the device (shapes from --train-shards, which are not "
                        "read): the step rate without data loading, to compare the loader against")
    p.add_argument("--decode", choices=("cpu", "gpu"), default=d.loader.decode,
                   help="gpu: the loader ships JPEG bytes, decoded on the device (nvJPEG)")
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every,
                   help="write step-N.pt every N steps (and at the end, and on Ctrl-C)")
    p.add_argument("--keep-checkpoints", type=int, default=d.keep_checkpoints,
                   help="step checkpoints kept besides latest.pt (0: latest.pt only)")
    p.add_argument("--log-every", type=int, default=d.log_every, help="metrics.jsonl record every N steps")
    p.add_argument("--resume", default=d.resume, help="checkpoint file or a run's --out folder (its latest.pt)")
    p.add_argument("--quiet", dest="progress", action="store_false", default=d.progress, help="no progress bar")
    p.add_argument("--tensorboard", action="store_true", default=d.tensorboard,
                   help="also log to OUT/tensorboard/ (needs `pip install tensorboard`; skipped with a note if absent)")
    return p


def config_from_args(a: argparse.Namespace) -> TrainConfig:
    """The TrainConfig the options ask for (`shardgen.config.config_from_options`: fields by name, a refused value
    a UserError naming its option); `--random-crop` also flips."""
    try:  # LoaderConfig.weights is --train-weights (--weights: the trunk's ImageNet weights)
        loader = config_from_options(LoaderConfig, a, flip=a.crop == "random", drop_last=True,
                                     weights=tuple(a.train_weights) if a.train_weights else None)
    except UserError as exc:
        raise UserError(str(exc).replace("--weights ", "--train-weights ", 1)) from None
    return config_from_options(TrainConfig, a, loader=loader, train_shards=as_sources(a.train_shards),
                               val_shards=as_sources(a.val_shards))


def main(argv: list[str] | None = None) -> int:
    """The CLI. Exit codes (`shardgen.format.errors.report`): 0 done, 2 bad input or bad data in the shards (one
    line), 128 + the signal when stopped by Ctrl-C (130), SIGTERM (143) or SIGUSR1 (138), after a checkpoint.
    `--help` returns 0 and a usage error 2 (argparse printed them), as `shardgen` does."""
    try:
        a = make_parser().parse_args(argv)
    except SystemExit as exc:
        return parser_exit_code(exc)
    try:
        cfg = config_from_args(a)
    except UserError as exc:  # a value TrainConfig or LoaderConfig refuses
        return report("train", exc)
    try:
        summary = train(cfg)
    except HANDLED as exc:  # bad input or data: one line, exit 2; Ctrl-C: 130 (TrainingInterrupted names the
        # checkpoint); a bug keeps its traceback
        return report("train", exc, interrupted="interrupted while setting up; nothing was saved")
    finally:
        teardown_distributed()
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, one summary: rank 0's (it holds the evaluation)
        print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
