"""One training step and what it updates: the model, the optimizer (two learning rates), the schedule and the
scaler, held together as `TrainState` so a checkpoint can save and restore them; the precision a step computes in.
(How a stop signal lands between steps, never inside one: `stop.py` beside it.)

A step never waits for the device: it returns its loss and gradient norm as device tensors, and the caller reads
them (one host sync) only on the steps it logs. AdamW is the fused kernel, which also takes fp16 loss scaling's
inf/nan check on the device (`GradScaler` with another optimizer reads it on the host every step).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import torch

from shardgen.format import redact_fields
from shardgen.format.names import EMBED_DIM

from .checkpoint import Position
from ..nets.clip import CLIPModel
from ..config import RunPlan, TrainConfig
from .distributed import DistEnv
from ..errors import CheckpointError, UserError
from ..nets.image_encoder import ImageEncoder
from ..nets.loss import info_nce_loss
from .schedule import cosine_with_warmup


def resolve_precision(choice: str, device: torch.device) -> str:
    """`--precision` on this device: "auto" is bf16 on GPUs with native bf16 (Ampere and later), fp16 with loss
    scaling on older ones (T4, V100), fp32 on the CPU. Raises UserError for fp16 off CUDA."""
    if choice == "auto":
        if device.type != "cuda":
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"
    if choice == "fp16" and device.type != "cuda":
        raise UserError(f"--precision fp16 needs a CUDA device (it trains with loss scaling), not {device}: "
                        "use bf16 or fp32")
    return choice


def make_autocast(precision: str, device: torch.device) -> torch.autocast:
    """The forward pass's autocast for a resolved precision (disabled for fp32)."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


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
    ], betas=(0.9, 0.98), eps=1e-6, fused=next(model.parameters()).device.type in ("cuda", "cpu"))


@dataclass
class TrainState:
    """What a checkpoint holds besides the position: the model (and its DDP wrapper), optimizer, schedule, scaler."""

    model: CLIPModel
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler  # enabled for fp16 only; its state is saved either way
    precision: str = "fp32"  # resolved: bf16, fp16 or fp32
    ddp: torch.nn.Module | None = None  # set once the state is restored; the model itself in one process

    def state_dict(self, pos: Position, cfg: TrainConfig, loader_state: dict) -> dict:
        """Tensors and plain data only, so it loads with `weights_only=True`; the config's URLs without their
        passwords."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(), "step": pos.step,
                "loader": loader_state, "rng": torch.get_rng_state(), "config": redact_fields(asdict(cfg)),
                "embed_dim": self.model.embed_dim}

    def load_state_dict(self, state: dict, path: Path) -> None:
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:  # shapes or parameter groups that do not match
            raise CheckpointError(f"{path}: does not fit this model ({str(exc).splitlines()[0]})") from exc
        self.scheduler.load_state_dict(state["scheduler"])
        if state["scaler"]:  # empty when saved without fp16; a disabled scaler ignores what it is given
            self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"])


def build_run(cfg: TrainConfig, plan: RunPlan, env: DistEnv, *, embed_dim: int = EMBED_DIM) -> TrainState:
    """A new run's model (its head `embed_dim` wide: the shards' text embeddings), optimizer, schedule and
    scaler. One that resumes skips the ImageNet weights (and the network): the checkpoint overwrites every
    weight."""
    precision = resolve_precision(cfg.precision, env.device)
    pretrained = cfg.pretrained and cfg.resume is None
    model = CLIPModel(ImageEncoder(cfg.arch, pretrained=pretrained, weights_path=None if cfg.resume else cfg.weights),
                      embed_dim=embed_dim)
    model = model.to(env.device)
    if env.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # one input shape per run: pick the fastest convolutions once
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
    if cfg.compile:
        model.image_encoder.compile()  # in place: the state dict keeps its keys, so checkpoints stay portable
    optimizer = make_optimizer(model, cfg)
    scheduler = cosine_with_warmup(optimizer, warmup_steps=plan.warmup_steps, total_steps=plan.total_steps)
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
    return TrainState(model, optimizer, scheduler, scaler, precision)


class StepStats(NamedTuple):
    loss: torch.Tensor  # 0-dim, on the device: reading it waits for the step, so the loop does so on log steps
    grad_norm: torch.Tensor  # 0-dim, on the device; before clipping (inf when fp16 loss scaling skips the step)
    lr_trunk: float  # the rates this step used
    lr_head: float


def train_step(run: TrainState, batch: dict, *, autocast: torch.autocast, grad_clip: float) -> StepStats:
    """One optimizer step on one batch: forward, symmetric InfoNCE, backward, clip, step, schedule. Queues the
    work on the device and returns without waiting for it."""
    run.model.train()
    with autocast:
        image_emb = run.ddp(batch["image"])  # [B, 512]
    text_emb = torch.nn.functional.normalize(batch["text_embedding"], dim=-1)  # [B, D]
    loss = info_nce_loss(image_emb.float(), text_emb, run.model.scale())
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()  # scaler: a no-op unless fp16
    run.scaler.unscale_(run.optimizer)  # clip the true gradients
    grad_norm = torch.nn.utils.clip_grad_norm_(run.model.parameters(), grad_clip)
    lrs = run.scheduler.get_last_lr()
    run.scaler.step(run.optimizer)  # fp16: the fused kernel skips the update on inf/nan, checked on the device
    run.scaler.update()
    run.scheduler.step()
    return StepStats(loss.detach(), grad_norm.detach(), lrs[0], lrs[2])
