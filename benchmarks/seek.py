"""What a span that starts inside a shard costs: reading 10 samples from sample s of a 1000-sample shard, by reading
through the s samples before them (no index) or by seeking there through the shard's DALI index (a local seek; an
HTTP Range request), locally and from a loopback HTTP server that streams the file from disk. A worker reads a
shard's index once and keeps it: the seek's figure is with the index in memory, and reading and parsing the index
is its own row. Best of interleaved rounds (a shared machine's noise only ever adds time).
`python -m benchmarks.seek --work bench_out`.
"""

from __future__ import annotations

import argparse
import shutil
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from .common import ensure_encoder, ensure_sample, table, write_result

SAMPLES, TAKE, ROUNDS = 1000, 10, 15
STARTS = (0, 250, 500, 750, 990)


def _shard(work: Path) -> Path:
    from shardgen.sharding.pipeline import BuildConfig, build_shards

    out = work / "seek-shard"
    if not (out / "manifest.json").is_file():
        build_shards(BuildConfig(coco_root=ensure_sample(work, SAMPLES), split="train", out=out, limit=SAMPLES,
                                 samples_per_shard=SAMPLES, dali_index=True, progress=False,
                                 text_encoder=str(ensure_encoder(work, "tiny"))))
    return out


class _RangeHandler(SimpleHTTPRequestHandler):
    """GET with an optional `Range: bytes=N-`, streamed from the file (a plain static file server)."""

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        path = Path(self.translate_path(self.path))
        size = path.stat().st_size
        start = int(self.headers.get("Range", "bytes=0-")[6:].split("-")[0] or 0)
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(size - start))
        self.end_headers()
        with open(path, "rb") as fh:
            fh.seek(start)
            try:
                shutil.copyfileobj(fh, self.wfile)
            except (BrokenPipeError, ConnectionResetError):  # the reader had its samples and closed
                pass


def _read_ms(url: str, start: int, *, indexed: bool) -> float:
    """Milliseconds to read samples [start, start + TAKE) of the shard at `url` (index, if any, in memory)."""
    from loaders.plan.ranks import Span
    from loaders.read.spans import iter_span

    _prime(url, indexed=indexed)
    t0 = time.perf_counter()
    n = sum(len(keys) for keys, _ in iter_span(url, Span(0, start, start + TAKE), count=SAMPLES, retries=0,
                                               backoff=0.0, storage_options={}))
    assert n == TAKE
    return 1e3 * (time.perf_counter() - t0)


def _prime(url: str, *, indexed: bool) -> float:
    """Read the index into the worker's cache (or mark the shard as having none); milliseconds it took."""
    from loaders.read import seek

    seek._cache.clear()
    if not indexed:
        seek._cache[url] = None
        return 0.0
    t0 = time.perf_counter()
    seek.load_index(url, count=SAMPLES, storage_options={})
    return 1e3 * (time.perf_counter() - t0)


def run(work: Path) -> dict:
    shard = _shard(work)
    tar = next(shard.glob("*.tar"))
    rows, results = [], {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: _RangeHandler(*a, directory=str(shard)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    where = {"local": str(tar), "HTTP (loopback)": f"http://127.0.0.1:{server.server_address[1]}/{tar.name}"}
    try:
        for place, url in where.items():
            index_ms = min(_prime(url, indexed=True) for _ in range(ROUNDS))
            rows.append({"where": place, "start sample": "index", "read through ms": 0.0, "seek ms": index_ms,
                         "through / seek": 0.0})
            results[f"{place} index"] = {"read_parse_ms": index_ms}
            for start in STARTS:
                times = {k: [] for k in ("through", "seek")}
                for _ in range(ROUNDS):  # interleaved, so the machine's drift favours neither
                    times["through"].append(_read_ms(url, start, indexed=False))
                    times["seek"].append(_read_ms(url, start, indexed=True))
                through, seeked = min(times["through"]), min(times["seek"])
                rows.append({"where": place, "start sample": start, "read through ms": through,
                             "seek ms": seeked, "through / seek": through / seeked})
                results[f"{place} {start}"] = {"through_ms": through, "seek_ms": seeked}
    finally:
        server.shutdown()
    print(table(f"Mid-shard start: {TAKE} samples from sample s of a {SAMPLES}-sample shard "
                f"({tar.stat().st_size / 1e6:.1f} MB), best of {ROUNDS} interleaved rounds", rows))
    write_result("seek", {"shard_bytes": tar.stat().st_size, "samples": SAMPLES, "take": TAKE, "results": results})
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", type=Path, default=Path("bench_out"), help="scratch folder (sample data, shards)")
    run(parser.parse_args(argv).work)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
