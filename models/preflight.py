"""What a training run checks before its first step, besides the train shards (`models.train.open_loader`): the
output folder can be written. The val shards are opened there too (`models.train.check_val_shards`), so a run
that would fail in its end-of-run evaluation fails in its first seconds instead, naming `--val-shards`.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import UserError


def check_out_folder(out: Path) -> None:
    """`--out` is a folder this process can create and write into. Raises UserError naming the flag."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file, not a folder; choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out {out}: cannot create the folder ({exc.strerror or exc}); choose another --out") \
            from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise UserError(f"--out {out}: not writable by this user; choose another --out")
