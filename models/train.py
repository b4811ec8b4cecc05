"""`python -m models.train`: train the image tower + projection head against frozen CLIP text embeddings.

Reads shards through `loaders.make_loader` + `loaders.DeviceLoader` (uint8 to the device, normalized there). AdamW
with separate learning rates for trunk and head, warmup + cosine, bf16 autocast and channels-last on CUDA,
gradient clipping, DDP under `torchrun`, checkpoints with the loader position so `--resume` continues exactly.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from loaders import DeviceLoader, make_loader

from .checkpoint import load_checkpoint, save_checkpoint
from .clip import CLIPModel, parameter_counts
from .image_encoder import ImageEncoder, WeightsUnavailable
from .loss import info_nce_loss
from .schedule import cosine_with_warmup


@dataclass(frozen=True)
class TrainConfig:
    train_shards: str
    out: str
    val_shards: str | None = None
    epochs: int = 10
    batch_size: int = 128
    lr_head: float = 1e-3
    lr_trunk: float = 1e-4
    weight_decay: float = 0.1
    warmup_steps: int = 500
    grad_clip: float = 1.0
    arch: str = "resnet50"
    pretrained: bool = True
    weights: str | None = None
    num_workers: int = 4
    decode_threads: int | None = None
    crop: str = "center"
    flip: bool = False
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    channels_last: bool = True
    max_steps: int | None = None
    checkpoint_every: int = 1000
    log_every: int = 10
    resume: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        for name in ("lr_head", "lr_trunk"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")


def setup_distributed(device: str) -> tuple[int, int, torch.device]:
    """Initialize DDP when launched by torchrun (WORLD_SIZE > 1); returns (rank, world, device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available() and device in ("auto", "cuda")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device("cpu" if device == "auto" else device)


def make_optimizer(model: CLIPModel, cfg: TrainConfig) -> torch.optim.AdamW:
    """Trunk and head get their own learning rates; no weight decay on biases, norms and the temperature."""
    groups: dict[str, list] = {"trunk_decay": [], "trunk_no_decay": [], "head_decay": [], "head_no_decay": []}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        part = "trunk" if name.startswith("image_encoder.") else "head"
        decay = p.ndim >= 2 and name != "logit_scale"
        groups[f"{part}_{'decay' if decay else 'no_decay'}"].append(p)
    return torch.optim.AdamW([
        {"params": groups["trunk_decay"], "lr": cfg.lr_trunk, "weight_decay": cfg.weight_decay},
        {"params": groups["trunk_no_decay"], "lr": cfg.lr_trunk, "weight_decay": 0.0},
        {"params": groups["head_decay"], "lr": cfg.lr_head, "weight_decay": cfg.weight_decay},
        {"params": groups["head_no_decay"], "lr": cfg.lr_head, "weight_decay": 0.0},
    ], betas=(0.9, 0.98), eps=1e-6)


def train(cfg: TrainConfig) -> dict:
    """Run training; returns a summary (steps, last loss, checkpoint path, eval results if val shards given)."""
    torch.manual_seed(cfg.seed)
    rank, world, device = setup_distributed(cfg.device)
    out = Path(cfg.out)
    loader = make_loader(cfg.train_shards, batch_size=cfg.batch_size, num_workers=cfg.num_workers, seed=cfg.seed,
                         decode_threads=cfg.decode_threads, crop=cfg.crop, flip=cfg.flip, drop_last=True)
    channels_last = cfg.channels_last and device.type == "cuda"
    data = DeviceLoader(loader, device, channels_last=channels_last)
    model = CLIPModel(ImageEncoder(cfg.arch, pretrained=cfg.pretrained, weights_path=cfg.weights)).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, cfg)
    steps_per_epoch = len(loader)
    total = min(cfg.max_steps or 10**12, cfg.epochs * steps_per_epoch)
    scheduler = cosine_with_warmup(optimizer, warmup_steps=min(cfg.warmup_steps, total // 10 + 1), total_steps=total)
    scaler = torch.amp.GradScaler("cuda", enabled=False)  # bf16 needs no loss scaling; kept for checkpoint parity
    step, epoch, skip = 0, 0, 0
    if cfg.resume:
        state = load_checkpoint(cfg.resume)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        step, epoch, skip = state["step"], state["loader"]["epoch"], state["loader"]["batches_done"]
        torch.set_rng_state(state["rng"])
    ddp = DistributedDataParallel(model) if world > 1 else model
    out.mkdir(parents=True, exist_ok=True)
    log_file = open(out / "metrics.jsonl", "a") if rank == 0 else None  # noqa: SIM115 - closed below
    if rank == 0:
        counts = parameter_counts(model)
        print(f"train: {loader.samples_per_epoch * world} samples/epoch, {steps_per_epoch} steps/epoch, "
              f"{total} steps, {counts['trainable'] / 1e6:.1f} M trainable parameters, device {device}, "
              f"world {world}", file=sys.stderr)

    def checkpoint(batches_done: int, ep: int) -> Path | None:
        if rank != 0:
            return None
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "step": step,
                 "loader": {"epoch": ep, "batches_done": batches_done, "seed": cfg.seed},
                 "rng": torch.get_rng_state(), "config": asdict(cfg)}
        save_checkpoint(out / f"step-{step:08d}.pt", state)
        return save_checkpoint(out / "latest.pt", state)

    from tqdm.auto import tqdm

    last_loss = float("nan")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp and device.type == "cuda")
    bar = tqdm(total=total, initial=step, desc="train", unit="step", disable=not (cfg.progress and rank == 0))
    t_last, n_last = time.perf_counter(), 0
    batches_done = skip
    while step < total:
        loader.set_epoch(epoch, skip_batches=skip)
        batches_done = skip
        for batch in data:
            model.train()
            with autocast:
                image_emb = ddp(batch["image"])  # [B, 512]
            text_emb = torch.nn.functional.normalize(batch["text_embedding"], dim=-1)  # [B, 512]
            loss = info_nce_loss(image_emb.float(), text_emb, model.scale())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            step, batches_done, last_loss = step + 1, batches_done + 1, loss.item()
            n_last += batch["image"].shape[0] * world
            bar.update(1)
            if step % cfg.log_every == 0 or step == total:
                rate = n_last / (time.perf_counter() - t_last)
                t_last, n_last = time.perf_counter(), 0
                lrs = scheduler.get_last_lr()
                record = {"step": step, "epoch": epoch, "loss": last_loss, "lr_trunk": lrs[0], "lr_head": lrs[2],
                          "logit_scale": model.scale().item(), "grad_norm": float(grad_norm), "samples_per_s": rate}
                bar.set_postfix(loss=f"{last_loss:.3f}", lr=f"{lrs[2]:.2e}", sps=f"{rate:.0f}")
                if log_file:
                    log_file.write(json.dumps(record) + "\n")
                    log_file.flush()
            if step % cfg.checkpoint_every == 0:
                checkpoint(batches_done, epoch)
            if step >= total:
                break
        if batches_done >= steps_per_epoch:  # epoch complete: the next one starts from its first batch
            epoch, skip, batches_done = epoch + 1, 0, 0
            checkpoint(0, epoch)
        else:
            skip = batches_done
    bar.close()
    ckpt = checkpoint(batches_done, epoch)
    if log_file:
        log_file.close()
    summary = {"steps": step, "last_loss": last_loss, "checkpoint": str(ckpt) if ckpt else None}
    if cfg.val_shards and rank == 0:
        from .evaluate import evaluate_checkpoint

        summary["eval"] = evaluate_checkpoint(out / "latest.pt", cfg.val_shards, device=str(device))
    if dist.is_initialized():
        dist.barrier()
    return summary


def make_parser() -> argparse.ArgumentParser:
    d = TrainConfig(train_shards="", out="")
    p = argparse.ArgumentParser(prog="python -m models.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-shards", required=True, help="shard folder/URL with manifest.json (or brace pattern)")
    p.add_argument("--val-shards", default=None, help="evaluate Recall@K on these shards at the end")
    p.add_argument("--out", required=True, help="folder for checkpoints, metrics.jsonl and eval results")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="per GPU")
    p.add_argument("--lr-head", type=float, default=d.lr_head)
    p.add_argument("--lr-trunk", type=float, default=d.lr_trunk)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--warmup-steps", type=int, default=d.warmup_steps)
    p.add_argument("--grad-clip", type=float, default=d.grad_clip)
    p.add_argument("--arch", choices=["resnet50", "resnet18"], default=d.arch,
                   help="resnet18 only for CPU smoke runs and tests")
    p.add_argument("--no-pretrained", action="store_true", help="random-init trunk (no ImageNet weights)")
    p.add_argument("--weights", default=None, help="local ImageNet state dict for the trunk (offline)")
    p.add_argument("--num-workers", type=int, default=d.num_workers)
    p.add_argument("--decode-threads", type=int, default=None)
    p.add_argument("--random-crop", action="store_true", help="random crop + flip (needs --no-crop shards)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=d.device)
    p.add_argument("--no-amp", action="store_true")
    p.add_argument("--max-steps", type=int, default=None, help="stop after N steps (smoke runs)")
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)
    p.add_argument("--log-every", type=int, default=d.log_every)
    p.add_argument("--resume", default=None, help="checkpoint file or the --out folder (uses latest.pt)")
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    a = make_parser().parse_args(argv)
    cfg = TrainConfig(train_shards=a.train_shards, val_shards=a.val_shards, out=a.out, epochs=a.epochs,
                      batch_size=a.batch_size, lr_head=a.lr_head, lr_trunk=a.lr_trunk, weight_decay=a.weight_decay,
                      warmup_steps=a.warmup_steps, grad_clip=a.grad_clip, arch=a.arch, pretrained=not a.no_pretrained,
                      weights=a.weights, num_workers=a.num_workers, decode_threads=a.decode_threads,
                      crop="random" if a.random_crop else "center", flip=a.random_crop, seed=a.seed, device=a.device,
                      amp=not a.no_amp, max_steps=a.max_steps, checkpoint_every=a.checkpoint_every,
                      log_every=a.log_every, resume=a.resume, progress=not a.quiet)
    try:
        summary = train(cfg)
    except (WeightsUnavailable, FileNotFoundError, ValueError) as exc:
        print(f"train: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
