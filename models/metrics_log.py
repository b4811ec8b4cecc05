"""A training run's logs: `metrics.jsonl` (one JSON record per logged step) and `train.log` (the lines printed at
start, resume and end), plus the samples/s meter the records carry.

A run that starts at step N (0 for a fresh run, the checkpoint's step on resume) keeps only the records up to N:
later ones belong to steps it is about to redo, so no step appears twice.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


class MetricsLog:
    def __init__(self, path: Path, *, start_step: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        kept = _records_up_to(path, start_step) if path.is_file() else []
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, path)
        self.file = open(path, "a")  # noqa: SIM115 - closed by close()

    def write(self, record: dict) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def _records_up_to(path: Path, step: int) -> list[str]:
    """The lines of `path` whose record's step is <= `step`; a torn last line (a killed run) is dropped."""
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= step:
            kept.append(line)
    return kept


class RunLog:
    """Lines for the person running training: printed to stderr and appended to `train.log` in the run folder."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def say(self, line: str) -> None:
        print(line, file=sys.stderr)
        if self.path is not None:
            with open(self.path, "a") as fh:
                fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")


class Throughput:
    """Samples per second since the previous reading."""

    def __init__(self) -> None:
        self.t0, self.n = time.perf_counter(), 0

    def add(self, n: int) -> None:
        self.n += n

    def read(self) -> float:
        now = time.perf_counter()
        rate = self.n / max(now - self.t0, 1e-9)
        self.t0, self.n = now, 0
        return rate
