"""Every package's public API: `from <package> import *` works (each name in `__all__` resolves), for every
package folder of the three."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _packages() -> list[str]:
    return sorted(".".join(init.parent.relative_to(ROOT).parts)
                  for top in ("shardgen", "loaders", "models") for init in (ROOT / top).rglob("__init__.py"))


def test_star_import_works_for_every_package():
    packages = _packages()
    assert {"shardgen", "shardgen.format", "loaders", "models"} <= set(packages)
    code = ("import sys\nfailed = []\n"
            f"for name in {packages!r}:\n"
            "    try:\n"
            "        exec(f'from {name} import *', {})\n"
            "    except (ImportError, AttributeError) as exc:\n"
            "        failed.append(f'{name}: {exc!r}')\n"
            "print('\\n'.join(failed))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", out.stdout
