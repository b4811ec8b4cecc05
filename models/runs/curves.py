"""Training curves a person can look at: `curves.png` in a run folder (loss, learning rates, temperature and
Recall@K over steps), drawn from the run's `metrics.jsonl` and its `eval-*.json` results; and TensorBoard logging
for `--tensorboard`, where the `tensorboard` package is installed (without it, a one-line note and no logging).

The PNG is redrawn from the files, not kept in memory, so it can be refreshed at any time: at the end of training
(after its evaluation) and by each `models.evaluate` into the run folder. Matplotlib is used through its
object-oriented API (`Figure` + Agg canvas), so drawing never changes the backend of a notebook it runs in.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from shardgen.format import open_atomic

CURVES_NAME = "curves.png"
METRICS_NAME = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
RECALL_KEYS = tuple(f"{d}_R@{k}" for d in ("text_to_image", "image_to_text") for k in (1, 5, 10))


class Curves(NamedTuple):
    """What the picture shows: per logged step, and Recall@K per evaluation (`{label: [(step, value)]}`)."""

    steps: list[int]
    loss: list[float]
    lr_head: list[float]
    lr_trunk: list[float]
    temperature: list[float]  # 1 / logit_scale
    recall: dict[str, list[tuple[int, float]]]


def read_curves(run_dir: str | Path) -> Curves:
    """The series in `run_dir`'s metrics.jsonl and eval-*.json (records that do not parse are skipped)."""
    run_dir = Path(run_dir)
    steps, loss, lr_head, lr_trunk, temperature = [], [], [], [], []
    path = run_dir / METRICS_NAME
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn last line of a killed run
        if not isinstance(rec, dict) or not isinstance(rec.get("step"), int):
            continue
        steps.append(rec["step"])
        loss.append(float(rec.get("loss", "nan")))
        lr_head.append(float(rec.get("lr_head", "nan")))
        lr_trunk.append(float(rec.get("lr_trunk", "nan")))
        scale = float(rec.get("logit_scale", "nan"))
        temperature.append(1.0 / scale if scale else float("nan"))
    return Curves(steps, loss, lr_head, lr_trunk, temperature, _read_recalls(run_dir))


def _read_recalls(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    files = sorted(run_dir.glob("eval-*.json"))
    recall: dict[str, list[tuple[int, float]]] = {}
    for path in files:
        try:
            rec = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if not isinstance(rec, dict) or not isinstance(rec.get("step"), int):
            continue
        shards = path.stem.removeprefix("eval-") if len(files) > 1 else ""
        for key in RECALL_KEYS:
            if isinstance(rec.get(key), (int, float)):
                label = key.replace("_to_", "→").replace("_R@", " R@")  # text→image R@5
                recall.setdefault(f"{label} {shards}".strip(), []).append((rec["step"], float(rec[key])))
    return {label: sorted(points) for label, points in recall.items()}


def recall_set(label: str) -> str:
    """The shard set of a Recall@K series label (`text→image R@5 val-3f2a1c` → `val-3f2a1c`; "" when the run was
    evaluated on one set only)."""
    parts = label.split(" ")
    return parts[2] if len(parts) > 2 else ""


def recall_style(label: str, labels: list[str]) -> tuple[tuple, str, str]:
    """(colour, line style, marker) of a Recall@K series: one colour per shard set (tab10, then tab20 beyond 10
    sets: never two sets alike), one colour per metric with a single set; the line style tells the direction,
    the marker K."""
    sets = sorted({recall_set(x) for x in labels})
    if len(sets) > 1:
        key, keys = recall_set(label), sets
    else:
        key, keys = label.split(" ")[1], sorted({x.split(" ")[1] for x in labels})  # R@1, R@5, R@10
    palette = "tab10" if len(keys) <= 10 else "tab20"
    from matplotlib import colormaps

    colour = colormaps[palette](keys.index(key) % colormaps[palette].N)
    style = "-" if label.startswith("text") else "--"
    marker = {"R@1": "o", "R@5": "s", "R@10": "^"}.get(label.split(" ")[1], "o")
    return colour, style, marker


def plot_curves(curves: Curves, *, title: str = ""):
    """A 2×2 matplotlib `Figure`: loss, learning rates, temperature, Recall@K (points: one per evaluation)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 7.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    (ax_loss, ax_lr), (ax_temp, ax_recall) = fig.subplots(2, 2, sharex=True)
    ax_loss.plot(curves.steps, curves.loss, color="tab:blue")
    ax_loss.set_title("InfoNCE loss")
    ax_lr.plot(curves.steps, curves.lr_head, label="head")
    ax_lr.plot(curves.steps, curves.lr_trunk, label="trunk")
    ax_lr.set_title("learning rate")
    ax_lr.legend(loc="best", fontsize=8)
    ax_temp.plot(curves.steps, curves.temperature, color="tab:purple")
    ax_temp.set_title("temperature (1 / logit scale)")
    for label, points in curves.recall.items():
        colour, style, marker = recall_style(label, list(curves.recall))
        ax_recall.plot([s for s, _ in points], [v for _, v in points], color=colour, linestyle=style,
                       marker=marker, label=label)
    ax_recall.set_title("Recall@K" + ("" if curves.recall else " (no evaluation yet)"))
    ax_recall.set_ylim(0, 1)
    if curves.recall:
        ax_recall.legend(loc="best", fontsize=7)
    for ax in (ax_temp, ax_recall):
        ax.set_xlabel("step")
    for ax in (ax_loss, ax_lr, ax_temp, ax_recall):
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return fig


def write_curves(run_dir: str | Path, *, tensorboard: bool = False) -> Path | None:
    """Draw `run_dir/curves.png` (atomically); returns it, or None when nothing has been logged yet. With
    `tensorboard`, the evaluations' Recall@K also go to `run_dir/tensorboard/` (where tensorboard is installed)."""
    run_dir = Path(run_dir)
    curves = read_curves(run_dir)
    if not curves.steps and not curves.recall:
        return None
    fig = plot_curves(curves, title=run_dir.name)
    out = run_dir / CURVES_NAME
    with open_atomic(out) as fh:
        fig.savefig(fh, format="png")
    if tensorboard and curves.recall:
        writer = open_tensorboard(run_dir / TENSORBOARD_DIR, say=lambda _: None)  # training said it already
        if writer is not None:
            for label, points in curves.recall.items():
                for step, value in points:
                    writer.add_scalar(f"eval/{label.replace('→', '_to_').replace(' ', '_')}", value, step)
            writer.close()
    return out


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def open_tensorboard(log_dir: str | Path, *, purge_step: int | None = None,
                     say: Callable[[str], None] = _stderr):
    """A `torch.utils.tensorboard.SummaryWriter` on `log_dir`, or None (after one line through `say`) when the
    tensorboard package is not installed. `purge_step`: on resume, events from that step on are discarded."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        say("note: --tensorboard: the tensorboard package is not installed (pip install tensorboard); "
            f"the curves are in {CURVES_NAME} and {METRICS_NAME} only")
        return None
    return SummaryWriter(str(log_dir), purge_step=purge_step)


def log_scalars(writer, record: dict) -> None:
    """One metrics.jsonl record as TensorBoard scalars `train/<name>` at its step."""
    step = record["step"]
    for name, value in record.items():
        if name != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
            writer.add_scalar(f"train/{name}", value, step)
