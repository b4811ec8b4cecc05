"""How a person types this environment's commands from the current folder, for the "next:" lines tools print.

After `make demo` the tools live in `.venv/bin/`, which is not on PATH until the environment is activated: a
"next:" line saying `shardgen ...` or `python -m ...` would then fail or run another Python. These helpers name a
command as it runs here: its bare name when PATH finds this environment's, else its path (relative when it lies
under the current folder, e.g. `.venv/bin/shardgen`).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


def _typed(path: Path) -> str:
    """`path` relative to the current folder when it lies inside it, else absolute."""
    path = path.absolute()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _found_here(name: str) -> bool:
    """Whether PATH finds `name` in this interpreter's own bin folder."""
    found = shutil.which(name)
    return found is not None and Path(found).absolute().parent == Path(sys.executable).absolute().parent


def python_command() -> str:
    """`python` when PATH finds this interpreter's environment first, else this interpreter's path."""
    return "python" if _found_here("python") else _typed(Path(sys.executable))


def tool_command(name: str, module: str) -> str:
    """A console script of this environment (`shardgen`): its name when PATH finds it, else its path, else
    `<python> -m <module>`."""
    script = Path(sys.executable).parent / name
    if _found_here(name):
        return name
    if script.is_file() and os.access(script, os.X_OK):
        return _typed(script)
    return f"{python_command()} -m {module}"


def activate_hint() -> str:
    """How to put this environment's commands on PATH (`source .venv/bin/activate`), or "" when they are."""
    script = Path(sys.executable).parent / "activate"
    if _found_here("python") or not script.is_file():
        return ""
    return f"source {_typed(script)}"
