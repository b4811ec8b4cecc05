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
    for heavy in ("shardgen.sharding", "shardgen.text", "models", "transformers", "PIL.ImageDraw", "torchvision"):
        assert heavy not in loaded, f"`import loaders` imports {heavy}"


def test_cli_and_format_layer_import_no_torch():
    for statement in ("import shardgen.format", "import shardgen.cli.main; shardgen.cli.main.make_parser()",
                      "import shardgen.text"):
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


# shardgen's stage folders, bottom to top: a folder may import the loose modules (config, errors), format/ and
# the folders listed before it, never one after it (the CLI sits on top; nothing imports it).
STAGES = ("format", "sources", "text", "sharding", "publish", "cli")
LOOSE = {"__init__", "__main__", "config", "errors"}


def _stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in STAGES else None


def _absolute_imports(path: Path) -> set[str]:
    """Every shardgen module `path` imports, relative imports resolved against its own package."""
    package = ".".join(path.relative_to(ROOT).parent.parts)
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.split(".")[:len(package.split(".")) - node.level + 1]
            found.add(".".join(base + ([node.module] if node.module else [])))
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return {m for m in found if m.split(".")[0] == "shardgen"}


def test_shardgen_folders_read_as_the_pipeline():
    loose = sorted(p.stem for p in (ROOT / "shardgen").glob("*.py"))
    assert set(loose) <= LOOSE, f"modules loose in shardgen/ (put them in a stage folder): {set(loose) - LOOSE}"
    folders = sorted(p.name for p in (ROOT / "shardgen").iterdir() if (p / "__init__.py").exists())
    assert folders == sorted(STAGES), folders
    for path in (ROOT / "shardgen").rglob("*.py"):
        own = _stage(".".join(path.relative_to(ROOT).with_suffix("").parts))
        allowed = STAGES[:STAGES.index(own) + 1] if own else STAGES  # loose modules: config, errors
        for module in _absolute_imports(path):
            stage = _stage(module)
            if own is None:  # config validates the input it names against the input kinds' registry, and only that
                registry = path.name == "config.py" and module == "shardgen.sources.inputs"
                assert stage in (None, "format") or registry or path.name in ("__main__.py", "__init__.py"), \
                    f"{path.relative_to(ROOT)} (a loose module) imports {module}"
            else:
                assert stage is None or stage in allowed, f"{path.relative_to(ROOT)} imports {module}: arrows " \
                    f"point down the pipeline {' <- '.join(STAGES)}"


def test_imports_point_one_way():
    for path in (ROOT / "shardgen").rglob("*.py"):
        bad = {m for m in _imports(path) if m.split(".")[0] in ("loaders", "models")}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"
    for path in (ROOT / "shardgen" / "format").glob("*.py"):
        bad = {m for m in _imports(path) if not m.startswith("shardgen.format")}
        assert not bad, f"{path.relative_to(ROOT)}: the format layer imports {bad}"
        bad = {m for m in _absolute_imports(path) if _stage(m) != "format"}
        assert not bad, f"{path.relative_to(ROOT)}: the format layer imports {bad}"
    for path in (ROOT / "loaders").glob("*.py"):
        bad = {m for m in _imports(path) if not m.startswith("shardgen.format")}
        assert not bad, f"{path.relative_to(ROOT)}: loaders may import only shardgen.format, not {bad}"
    entry_points = {"train.py", "evaluate.py", "__init__.py"}
    for path in (ROOT / "models").glob("*.py"):
        allowed = ("loaders", "shardgen") if path.name in entry_points else ("shardgen.format",)
        if path.name == "config.py":  # TrainConfig holds the loader's LoaderConfig
            allowed = ("loaders.config", "shardgen.format")
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


def test_the_formats_constants_are_defined_once():
    """Writer and readers import these from the one module that owns them (`shardgen/format/names.py`; the
    sample's member list from the schema); a second definition could drift."""
    owner = {name: "shardgen/format/names.py" for name in
             ("EMBED_DIM", "EMBED_DTYPE", "MAX_IMAGE_ID", "MAX_STORED_IMAGE_PIXELS", "MANIFEST_NAME")}
    owner["FIELDS"] = "shardgen/format/schema.py"
    for package in ("shardgen", "loaders", "models", "benchmarks"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.parse(path.read_text()).body:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target] \
                    if isinstance(node, ast.AnnAssign) else []
                for name in {t.id for t in targets if isinstance(t, ast.Name)} & owner.keys():
                    assert path == ROOT / owner[name], \
                        f"{path.relative_to(ROOT)} defines {name} again: import it from {owner[name]}"


def test_no_test_folder_is_skipped_by_pytest(pytestconfig):
    """Every folder holding test files is collected: pytest's default `norecursedirs` skips folders named `build`,
    which once hid tests/shardgen/build/ (now sharding/) from `make test` (pyproject sets the list)."""
    from fnmatch import fnmatch

    skipped = pytestconfig.getini("norecursedirs")
    for test_file in (ROOT / "tests").rglob("test_*.py"):
        for part in test_file.relative_to(ROOT).parent.parts:
            hidden = [pattern for pattern in skipped if fnmatch(part, pattern)]
            assert not hidden, f"{test_file.relative_to(ROOT)} is never collected: {part!r} matches {hidden}"


# The directory patterns of GitHub's standard Python .gitignore (github/gitignore Python.gitignore) and the names
# pytest and structure tools treat as generated: a package folder matching one would be dropped from a
# contributor's commits or skipped by tools.
GENERATED_DIRS = ("build", "develop-eggs", "dist", "downloads", "eggs", ".eggs", "lib", "lib64", "parts", "sdist",
                  "var", "wheels", "share", "*.egg-info", "htmlcov", ".tox", ".nox", "instance", "docs/_build",
                  "target", "profile_default", "__pypackages__", "celerybeat-schedule", "env", ".env", ".venv",
                  "venv", "ENV", "env.bak", "venv.bak", "site", ".mypy_cache", ".pytest_cache", "cython_debug",
                  "out", "tmp", "bin", "obj", "node_modules", "cover", "logs")


def test_no_package_folder_has_a_generated_name():
    """No folder of a package or of the tests is named like build output (`shardgen/build/` once was)."""
    from fnmatch import fnmatch

    for package in ("shardgen", "loaders", "models", "tests", "benchmarks"):
        for init in (ROOT / package).rglob("*.py"):
            for part in init.relative_to(ROOT).parent.parts:
                hit = [p for p in GENERATED_DIRS if fnmatch(part, p)]
                assert not hit, f"{init.parent.relative_to(ROOT)}: folder {part!r} matches .gitignore's {hit}"
