"""Every package's public API: `from <package> import *` works (each name in `__all__` resolves), for every
package folder of the three."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _packages() -> list[str]:
    return sorted(".".join(init.parent.relative_to(ROOT).parts)
                  for top in ("shardgen", "loaders", "models") for init in (ROOT / top).rglob("__init__.py"))


def test_star_import_works_for_every_package():
    packages = _packages()
    assert {"shardgen", "shardgen.format", "loaders", "models", "loaders.plan", "loaders.read", "loaders.shape",
            "loaders.handover", "models.nets", "models.training", "models.runs"} <= set(packages)
    code = ("import sys\nfailed = []\n"
            f"for name in {packages!r}:\n"
            "    try:\n"
            "        exec(f'from {name} import *', {})\n"
            "    except (ImportError, AttributeError) as exc:\n"
            "        failed.append(f'{name}: {exc!r}')\n"
            "print('\\n'.join(failed))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", out.stdout


# Names several modules define on purpose: every command's own entry point and parser. `report` in
# sources/download.py (the download's summary) still shares errors.report's name.
# entry points every module of a kind defines: commands (`main`, `make_parser`, `report`), executors (`start`)
SHARED_NAMES = {"main", "make_parser", "report", "start"}


def test_each_public_name_has_one_meaning():
    """A public function or class is defined in one module of the three packages (`letterbox` was drawn twice,
    `check_meta` meant the schema's rule and a located wrapper)."""
    seen: dict[str, str] = {}
    for top in ("shardgen", "loaders", "models"):
        for path in sorted((ROOT / top).rglob("*.py")):
            for node in ast.parse(path.read_text()).body:
                if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_") \
                        and node.name not in SHARED_NAMES:
                    where = str(path.relative_to(ROOT))
                    assert node.name not in seen, f"{node.name} is defined in {seen[node.name]} and {where}"
                    seen[node.name] = where
