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


def _absolute_imports(path: Path, top: str = "shardgen") -> set[str]:
    """Every module of package `top` that `path` imports, relative imports resolved against its own package."""
    package = ".".join(path.relative_to(ROOT).parent.parts)
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.split(".")[:len(package.split(".")) - node.level + 1]
            found.add(".".join(base + ([node.module] if node.module else [])))
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return {m for m in found if m.split(".")[0] == top}


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
    for path in (ROOT / "loaders").rglob("*.py"):
        bad = {m for m in _imports(path) if not m.startswith(("shardgen.format", "loaders"))}
        assert not bad, f"{path.relative_to(ROOT)}: loaders may import only shardgen.format, not {bad}"
    # the two commands on top and the run folder (what they check, print and write) join loaders and models
    entry_points = {"models/train.py", "models/evaluate.py", "models/__init__.py"}
    for path in (ROOT / "models").rglob("*.py"):
        where = path.relative_to(ROOT).as_posix()
        allowed = ("loaders", "shardgen", "models") if where in entry_points or where.startswith("models/runs/") \
            else ("shardgen.format", "models")
        if where == "models/config.py":  # TrainConfig holds the loader's LoaderConfig
            allowed = ("loaders.config", "shardgen.format", "models")
        bad = {m for m in _imports(path) if not m.startswith(allowed)}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


# loaders' and models' stage folders, first to last: a module imports its own folder, the folders before it and
# the loose modules (config, errors), never a folder after it. loaders: plan (what an epoch reads) → read (bytes
# into records) → shape (records into batches) → handover (the epoch run, workers, the façade, the device).
# models: nets (the model library) → training (steps, checkpoints; no loaders) → runs (what the two commands
# check, print and write); train.py and evaluate.py on top.
PACKAGE_STAGES = {"loaders": ("plan", "read", "shape", "handover"), "models": ("nets", "training", "runs")}
PACKAGE_LOOSE = {"loaders": {"__init__", "config", "errors", "coco_dataset"},
                 "models": {"__init__", "config", "errors", "train", "evaluate"}}
# what a loose module reaches in the folders: the public API (__init__), the commands on top, and these
LOOSE_REACH = {
    "loaders/config.py": {"loaders.shape.augment", "loaders.shape.decode"},  # names checked against registries
    "loaders/coco_dataset.py": {"loaders.handover.device"},  # CLIP_MEAN, CLIP_STD
    # ARCHS, the warmup's check, and checkpoint.Position as a type hint only
    "models/config.py": {"models.nets.image_encoder", "models.training.schedule", "models.training.checkpoint"},
}
TOPS = {"models/__init__.py", "models/train.py", "models/evaluate.py", "loaders/__init__.py"}


def test_loaders_and_models_folders_read_as_the_pipeline():
    for top, stages in PACKAGE_STAGES.items():
        loose = {p.stem for p in (ROOT / top).glob("*.py")}
        assert loose <= PACKAGE_LOOSE[top], f"modules loose in {top}/ (put them in a stage folder): " \
            f"{loose - PACKAGE_LOOSE[top]}"
        folders = sorted(p.name for p in (ROOT / top).iterdir() if (p / "__init__.py").exists())
        assert folders == sorted(stages), folders
        for path in (ROOT / top).rglob("*.py"):
            where = path.relative_to(ROOT).as_posix()
            parts = path.relative_to(ROOT / top).parts
            own = parts[0] if len(parts) > 1 else None
            for module in _absolute_imports(path, top):
                stage = module.split(".")[1] if module.count(".") and module.split(".")[1] in stages else None
                if stage is None:
                    continue  # the package itself or a loose module
                if own is None:
                    assert where in TOPS or module in LOOSE_REACH.get(where, ()), \
                        f"{where} (a loose module) imports {module}"
                else:
                    assert stages.index(stage) <= stages.index(own), \
                        f"{where} imports {module}: arrows point down the pipeline {' <- '.join(reversed(stages))}"


def _loader_internals(path: Path) -> list[str]:
    """`<x>.dataset.<y>` chains (a loader's ShardStream, read from outside) and private names of loaders modules."""
    tree = ast.parse(path.read_text())
    aliases = {alias.asname or alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
               for alias in node.names if alias.name.startswith("loaders.") and alias.asname}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "dataset":
            found.append(f"line {node.lineno}: .dataset.{node.attr}")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("loaders"):
            found += [f"line {node.lineno}: {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            chain, value = [node.attr], node.value
            while isinstance(value, ast.Attribute):
                chain.append(value.attr)
                value = value.value
            if isinstance(value, ast.Name) and (value.id == "loaders" or value.id in aliases):
                found.append(f"line {node.lineno}: {value.id}.{'.'.join(reversed(chain))}")
    return found


def test_nothing_outside_loaders_reads_its_internals():
    """Code outside loaders/ asks the façade (`loader.shards`, `loader.image_size`, `loader.batches_in_pass`, ...),
    never a loader's `.dataset.` (its ShardStream) or a private name of a loaders module (loaders' own tests may)."""
    paths = [p for top in ("shardgen", "models", "benchmarks", "scripts") for p in (ROOT / top).rglob("*.py")]
    paths += [p for p in (ROOT / "tests").rglob("*.py") if "loaders" not in p.relative_to(ROOT / "tests").parts]
    for path in paths:
        found = _loader_internals(path)
        assert not found, f"{path.relative_to(ROOT)} reads the loader's internals: {found}"


def test_the_internals_check_finds_them(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import loaders.read.seek as seek\nfrom loaders.plan.seeds import _salt\n"
                     "n = loader.dataset.shards\nseek._cache.clear()\nloaders.handover.loader._as_is\n"
                     "ok = loader.shards, loader.dataset, obj.__class__\n")
    assert sorted(f.split(":")[0] for f in _loader_internals(probe)) == ["line 2", "line 3", "line 4", "line 5"]


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
