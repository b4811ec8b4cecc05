"""The house's shape, checked: imports point one way (models → loaders → shardgen.format; shardgen never imports
loaders or models), light entry points stay light, and modules stay small."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_import_loaders_pulls_no_builder_models_or_transformers():
    loaded = _loaded_after("import loaders")
    for heavy in ("shardgen.build", "shardgen.text", "models", "transformers", "PIL.ImageDraw", "torchvision"):
        assert heavy not in loaded, f"`import loaders` imports {heavy}"


def test_cli_and_format_layer_import_no_torch():
    for statement in ("import shardgen.format", "import shardgen.cli; shardgen.cli.make_parser()"):
        assert "torch" not in _loaded_after(statement), statement


def _imports(path: Path) -> set[str]:
    """Top-level packages of ours that `path` imports (absolute imports; relative ones stay inside)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m.split(".")[0] in ("shardgen", "loaders", "models")}


def test_imports_point_one_way():
    for path in (ROOT / "shardgen").rglob("*.py"):
        bad = {m for m in _imports(path) if m.split(".")[0] in ("loaders", "models")}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"
    for path in (ROOT / "shardgen" / "format").glob("*.py"):
        bad = {m for m in _imports(path) if not m.startswith("shardgen.format")}
        assert not bad, f"{path.relative_to(ROOT)}: the format layer imports {bad}"
    for path in (ROOT / "loaders").glob("*.py"):
        bad = {m for m in _imports(path) if not m.startswith("shardgen.format")}
        assert not bad, f"{path.relative_to(ROOT)}: loaders may import only shardgen.format, not {bad}"
    entry_points = {"train.py", "evaluate.py", "__init__.py"}
    for path in (ROOT / "models").glob("*.py"):
        allowed = ("loaders", "shardgen") if path.name in entry_points else ("shardgen.format",)
        bad = {m for m in _imports(path) if not m.startswith(allowed)}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_modules_stay_small():
    for package in ("shardgen", "loaders", "models"):
        for path in (ROOT / package).rglob("*.py"):
            n = len(path.read_text().splitlines())
            assert n <= 420, f"{path.relative_to(ROOT)} has {n} lines: a room doing several jobs?"


def test_functions_stay_short():
    """No function over ~60 lines, unless a `# long:` comment in it says why."""
    for package in ("shardgen", "loaders", "models"):
        for path in (ROOT / package).rglob("*.py"):
            lines = path.read_text().splitlines()
            for node in ast.walk(ast.parse("\n".join(lines))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    body = lines[node.lineno - 1:node.end_lineno]
                    if len(body) > 60 and not any("# long:" in line for line in body):
                        raise AssertionError(f"{path.relative_to(ROOT)}: {node.name} has {len(body)} lines")
