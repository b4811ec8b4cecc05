"""What decoding alone costs when it is done the way any multi-process loader must do it.

The P2 floor is one thread decoding the stored JPEGs (held as bytes) into one reused 150 KB buffer, times the
number of cores. A loader cannot work like that: its worker processes decode at the same time, from the shard
files, into batch memory the training process can read. This probe times exactly that and nothing else (no tar
parsing, no captions, no shuffling, no messages): `processes` forked processes, each decoding the JPEGs of its
share of the shards from a fresh memory map per pass (as a loader opens each shard once per epoch) into a ring of
shared [batch, S, S, 3] slots, pre-touched as a loader's are after its first epoch. The same loop with bytes in
and one reused buffer out (the floor's way, but on all cores at once) is measured alongside, so the cost of the
loader's kind of memory traffic shows on the machine at hand.
"""

from __future__ import annotations

import multiprocessing
import time

import numpy as np
import torch

SLOTS = 6  # per process, as the loader's ring: prefetch 2 + the batch being decoded + the caller's


def jpeg_views(urls: list[str]) -> tuple[list, list]:
    """The shards' stored JPEGs as views of memory maps, and the open files behind them."""
    from shardgen.format import iter_sample_groups

    views, handles = [], []
    for url in urls:
        fh = open(url, "rb")  # noqa: SIM115 - the views need the map until the pass ends
        handles.append(fh)
        for _, fields in iter_sample_groups(fh, zero_copy=True):
            views += fields["jpg"]
    return views, handles


def _child(w: int, processes: int, urls: list[str], mode: str, passes: int, batch: int, ring: torch.Tensor,
           ready, go, results) -> None:
    import simplejpeg

    mine = urls[w::processes]
    slots = ring.numpy()[w]
    slots[...] = 1  # fault the shared pages in, as a loader's ring is after its first epoch
    one = np.empty(slots.shape[2:], dtype=np.uint8)
    if mode == "bytes, one buffer":
        jpegs = [bytes(v) for v in jpeg_views(mine)[0]]
    ready.put(w)
    go.wait()
    t0 = time.perf_counter()
    n = 0
    for _ in range(passes):
        if mode == "bytes, one buffer":
            for data in jpegs:
                simplejpeg.decode_jpeg(data, colorspace="RGB", buffer=one)
            n += len(jpegs)
        else:
            views, handles = jpeg_views(mine)
            for i, data in enumerate(views):
                simplejpeg.decode_jpeg(data, colorspace="RGB", buffer=slots[(i // batch) % SLOTS][i % batch])
            n += len(views)
            del views
            for fh in handles:
                fh.close()
    results.put((n, time.perf_counter() - t0))


def decode_in_processes(urls: list[str], *, processes: int, mode: str, passes: int = 3, batch: int = 64,
                        size: int = 224) -> tuple[int, float]:
    """(images, seconds) for `processes` processes decoding their shares at once ("mapped shards, batch slots"
    or "bytes, one buffer"); seconds of the slowest."""
    ctx = multiprocessing.get_context("fork")
    ring = torch.empty((processes, SLOTS, batch, size, size, 3), dtype=torch.uint8).share_memory_()
    ready, go, results = ctx.Queue(), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_child, args=(w, processes, urls, mode, passes, batch, ring, ready, go, results),
                         daemon=True) for w in range(processes)]
    for p in procs:
        p.start()
    for _ in procs:  # every child has its slots faulted in and its input ready
        ready.get(timeout=600)
    go.set()
    done = [results.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    return sum(n for n, _ in done), max(s for _, s in done)
