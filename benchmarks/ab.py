"""A/B of two revisions on this machine, in one run: loader img/s and `shardgen build` img/s.

Each revision is exported (`git archive`) into its own folder and measured in child processes that import only
that tree (PYTHONPATH), rounds interleaved (A, B, A, B, ...) so drift hits both alike; the best round of each is
reported with every round. Both trees see the same inputs: the sample data, encoder, caption cache and shards are
made once by the current tree. Only public API that both revisions share is used (`shardgen.build_shards`,
`loaders.make_loader`), so the A/B measures the code, not the harness.

    python -m benchmarks.ab --a abca2dc --b HEAD --work bench_out/ab
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from .common import ensure_encoder, ensure_sample, table, write_result

BUILD_CHILD = """
import json, sys, time
from pathlib import Path
from shardgen import BuildConfig, build_shards
root, out, enc, cache, limit, workers = sys.argv[1:7]
cfg = BuildConfig(coco_root=Path(root), split="train", out=Path(out), text_encoder=enc, limit=int(limit),
                  workers=int(workers), embeddings_cache=Path(cache), progress=False)
t0 = time.perf_counter()
n = build_shards(cfg).manifest.n_samples
print(json.dumps({"n": n, "seconds": time.perf_counter() - t0}))
"""

LOADER_CHILD = """
import json, sys, time
from loaders import make_loader
shards, workers, epochs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
loader = make_loader(shards, batch_size=64, num_workers=workers, seed=0)
best = None
for epoch in range(epochs + 1):  # epoch 0 warms the workers and the page cache
    t0, n = time.perf_counter(), 0
    for batch in loader:
        n += batch["image"].shape[0]
    rate = n / (time.perf_counter() - t0)
    if epoch and (best is None or rate > best):
        best = rate
print(json.dumps({"n": n, "img_per_s": best}))
"""


def export_tree(rev: str, dest: Path) -> Path:
    """`rev`'s files (no .git) in `dest`; reused only while `rev` still names the commit exported there (a branch
    or HEAD moves)."""
    sha = subprocess.run(["git", "rev-parse", rev], capture_output=True, text=True, check=True).stdout.strip()
    stamp = dest / ".exported-commit"
    if not stamp.is_file() or stamp.read_text() != sha:
        subprocess.run(["rm", "-rf", str(dest)], check=True)
        dest.mkdir(parents=True)
        archive = subprocess.run(["git", "archive", rev], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
        stamp.write_text(sha)
    return dest


def _child(tree: Path, code: str, *args: str, expect_json: bool = True) -> dict:
    env = {"PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                          cwd=tree, check=False)
    if proc.returncode:
        raise SystemExit(f"{tree.name}: child failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1]) if expect_json else {}


def _inputs(work: Path, images: int) -> tuple[Path, Path, Path, Path]:
    """Sample data, tiny encoder, a warm caption cache and 2000-image loader shards, made by the current tree."""
    import shutil

    from shardgen import BuildConfig, build_shards

    root, encoder = ensure_sample(work, images), ensure_encoder(work, "tiny")
    cache, shards = work / "ab-cache.pt", work / "ab-shards"
    if not (shards / "manifest.json").is_file():
        shutil.rmtree(shards, ignore_errors=True)
        build_shards(BuildConfig(coco_root=root, split="train", out=shards, text_encoder=str(encoder),
                                 limit=images, samples_per_shard=max(1, images // 8), workers=2,
                                 embeddings_cache=cache, progress=False))
    return root, encoder, cache, shards


def same_bytes(work: Path, trees: dict[str, Path]) -> dict:
    """The 300-image sample (seed 7, tiny encoder, 64 per shard) built by each tree: sha256 of every file."""
    import hashlib

    from shardgen.sources.synthetic import make_sample

    coco, encoder = work / "bytes-coco", ensure_encoder(work, "tiny")
    if not (coco / "annotations").is_dir():
        make_sample(coco, images=300, val_images=30, seed=7, progress=False)
    digests = {}
    for rev, tree in trees.items():
        out = work / f"bytes-{rev}"
        subprocess.run(["rm", "-rf", str(out)], check=True)
        _child(tree, "import sys; from shardgen.cli.main import main; main(sys.argv[1:])" if (
            tree / "shardgen" / "cli" / "main.py").is_file() else "import sys; from shardgen.cli import main; "
            "main(sys.argv[1:])", "build", "--coco-root", str(coco), "--split", "train", "--out", str(out),
            "--text-encoder", str(encoder), "--samples-per-shard", "64", "--quiet", expect_json=False)
        digests[rev] = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(out.iterdir())
                        if f.is_file() and f.name != "manifest.json" and not f.name.startswith(".")}
    a, b = digests.values()
    differ = sorted(k for k in a.keys() & b.keys() if a[k] != b[k])
    only = {"a": sorted(a.keys() - b.keys()), "b": sorted(b.keys() - a.keys())}
    print(f"300-image sample: {len(a.keys() & b.keys())} files in both, "
          f"{'all identical' if not differ else 'differ: ' + ', '.join(differ)}; only in A: {only['a'] or 'none'}; "
          f"only in B: {only['b'] or 'none'}")
    return {"files": len(a.keys() & b.keys()), "differ": differ, "only": only}


def run(work: Path, *, a: str, b: str, rounds: int = 3, images: int = 2000, build_images: int = 1000,
        workers: int = 2, epochs: int = 3) -> dict:
    work = work.resolve()  # the children run in their own tree
    root, encoder, cache, shards = _inputs(work, images)
    trees = {rev: export_tree(rev, work / f"tree-{rev}") for rev in (a, b)}
    identical = same_bytes(work, trees)
    results: dict[str, dict[str, list[float]]] = {rev: {"loader": [], "build": []} for rev in trees}
    for r in range(rounds):
        for rev, tree in trees.items():
            out = work / f"ab-build-{rev}"
            subprocess.run(["rm", "-rf", str(out)], check=True)
            built = _child(tree, BUILD_CHILD, str(root), str(out), str(encoder), str(cache), str(build_images),
                           str(workers))
            results[rev]["build"].append(built["n"] / built["seconds"])
            results[rev]["loader"].append(_child(tree, LOADER_CHILD, str(shards), str(workers), str(epochs))["img_per_s"])
            print(f"round {r + 1} {rev}: build {results[rev]['build'][-1]:.0f} img/s, "
                  f"loader {results[rev]['loader'][-1]:.0f} img/s", flush=True)
    rows = []
    for what in ("loader", "build"):
        best_a, best_b = max(results[a][what]), max(results[b][what])
        rows.append({"measure": what, f"A {a} img/s": best_a, f"B {b} img/s": best_b, "B/A": best_b / best_a})
    print(table(f"A/B, best of {rounds} interleaved rounds ({workers} workers; loader: {images} images, batch 64; "
                f"build: {build_images} images, warm caption cache)", rows))
    data = {"a": a, "b": b, "rounds": results, "rows": rows, "sample_bytes": identical}
    write_result("ab", data)
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", required=True, help="the baseline revision (a commit, tag or branch)")
    parser.add_argument("--b", default="HEAD", help="the revision measured against it (default HEAD)")
    parser.add_argument("--work", type=Path, default=Path("bench_out/ab"), help="scratch folder")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bytes-only", action="store_true", help="only compare the 300-image sample's files")
    args = parser.parse_args(argv)
    if args.bytes_only:
        work = args.work.resolve()
        trees = {rev: export_tree(rev, work / f"tree-{rev}") for rev in (args.a, args.b)}
        return 0 if not same_bytes(work, trees)["differ"] else 1
    run(args.work, a=args.a, b=args.b, rounds=args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
