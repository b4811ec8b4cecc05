"""pyproject's dependencies match the code: every third-party module the three packages import is declared (a
required dependency or an extra), and every required dependency is imported somewhere (none is carried for
nothing)."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# import name → distribution name, where they differ (aiohttp and its yarl come with fsspec's `http` extra)
IMPORT_TO_DIST = {"PIL": "pillow", "open_clip": "open_clip_torch", "aiohttp": "fsspec[http]",
                  "yarl": "fsspec[http]"}


def _dist(requirement: str) -> str:
    """The distribution a requirement names, with its extras: `fsspec[http]>=2023.6` → `fsspec[http]`."""
    return re.split(r"[<>=!~; ]", requirement, maxsplit=1)[0].lower()


def _base(dist: str) -> str:
    return dist.split("[")[0]


def _imported() -> set[str]:
    found = set()
    for top in ("shardgen", "loaders", "models"):
        for path in (ROOT / top).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    found.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    found.add(node.module.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names and m not in ("shardgen", "loaders", "models")}


def test_dependencies_match_the_imports():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    required = {_dist(r) for r in project["dependencies"]}
    extras = {_dist(r) for name, reqs in project["optional-dependencies"].items() if name != "test" for r in reqs}
    used = {IMPORT_TO_DIST.get(m, m).lower() for m in _imported()}
    declared = required | extras | {_base(d) for d in required | extras}
    assert used - declared == set(), "imported but not declared (outside the test extra)"
    assert {_base(d) for d in required} - {_base(d) for d in used} == set(), "required but imported nowhere"
