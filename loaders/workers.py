"""Worker processes for the streaming loader: each runs `ShardStream.produce` for its share of every epoch and
hands batches to the main process through shared memory.

Why not DataLoader's workers: per batch, DataLoader sends an index to a worker through a queue (a feeder thread
and a pickle on each side), the worker sends the batch back the same way, and the main process wraps every
`next()` in a profiler scope, for batches whose pixels and embeddings already travel in shared memory. Measured
here on 2 cores (batch 64): training-process CPU 5.5 → 2.3 µs per image, loader throughput +3 %. And a persistent
DataLoader worker idles from the end of its share of an epoch until the next epoch is asked for, while the
worker with the larger share (batches rarely divide evenly) finishes it: ~5 % of one core per 2000-image epoch.
Here each worker owns two pipes: commands in (run an epoch, a credit per batch taken, halt, stop) and results
out (a small pickled message per batch: keys, captions, ids, the slot number). Workers are started once
(`multiprocessing`'s default context, as DataLoader does) and run ahead of the caller by `prefetch` batches; an
abandoned epoch's leftovers are recognised by their generation number and dropped.
"""

from __future__ import annotations

import gc
import multiprocessing
import pickle
import sys
import traceback
import weakref
from collections.abc import Iterator
from multiprocessing.reduction import ForkingPickler

import numpy as np
import torch
import torch.multiprocessing  # noqa: F401 - registers torch's tensor reducers with ForkingPickler


class WorkerError(RuntimeError):
    """A worker process failed or died; the message says which and why."""


class SlotRing:
    """Batch arrays in shared memory that worker processes fill and the main process reads, reused.

    Without it each worker batch costs a fresh shared-memory segment: `share_memory_()` of 9.6 MB (batch 64) takes
    ~7 ms here, and the main process page-faults the new mapping again (~2.3 ms), more than decoding 40 images.
    Slots are allocated once. `state[w, k]`: 0 free; g > 0 taken by worker w in iteration generation g; -1 held
    by the main process. A worker takes a slot that is free or left over from a generation before the previous
    one (a batch never taken because an iteration was abandoned, or a guessed epoch nobody asked for; the
    previous generation's last batches may still be on their way while a worker starts the next epoch),
    decodes into it and sends only its number; the main process wraps it as the batch's `image` and frees it
    once nothing references that array any more (the `_BufferPool` rule). Each cell is written by one side at a
    time. A worker that finds no free slot (the caller keeps many batches alive) falls back to a fresh shared
    tensor, so nothing ever waits on a slot."""

    def __init__(self, workers: int, slots: int, shape: tuple[int, ...], embed_dim: int) -> None:
        self.pixels = torch.empty((workers, slots, *shape), dtype=torch.uint8).share_memory_()
        self.embeddings = torch.empty((workers, slots, shape[0], embed_dim), dtype=torch.float32).share_memory_()
        self.state = torch.zeros((workers, slots), dtype=torch.int64).share_memory_()
        self._views: list[tuple[int, int, np.ndarray, np.ndarray]] = []  # main process: slots given to the caller
        self._np: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def __getstate__(self) -> dict:
        return {"pixels": self.pixels, "embeddings": self.embeddings, "state": self.state, "_views": [], "_np": None}

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """numpy views of (pixels, embeddings, state) in this process (indexing numpy is ~20× cheaper)."""
        if self._np is None:
            self._np = (self.pixels.numpy(), self.embeddings.numpy(), self.state.numpy())
        return self._np

    def acquire(self, worker: int, generation: int) -> tuple[int, np.ndarray, np.ndarray] | None:
        """Worker side: a free slot of this worker's, marked taken, as (index, pixels [B, S, S, 3], embeddings
        [B, D])."""
        pixels, embeddings, state = self.arrays()
        mine = state[worker]
        free = np.flatnonzero((mine == 0) | ((mine > 0) & (mine < generation - 1)))
        if not len(free):
            return None
        k = int(free[0])
        mine[k] = generation
        return k, pixels[worker, k], embeddings[worker, k]

    def give(self, worker: int, k: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Main side: the first n images and embeddings of slot k, held until the caller lets go of both."""
        pixels, embeddings, state = self.arrays()
        state[worker, k] = -1
        views = pixels[worker, k, :n], embeddings[worker, k, :n]
        self._views.append((worker, k, *views))
        return views

    def release_unused(self) -> None:
        state = self.arrays()[2]
        keep = []
        for item in self._views:
            # held while anyone besides this list (and getrefcount's argument) refers to either array
            if sys.getrefcount(item[2]) > 2 or sys.getrefcount(item[3]) > 2:
                keep.append(item)
            else:
                state[item[0], item[1]] = 0
        self._views = keep


_FROZEN = False


def freeze_inherited_objects() -> None:
    """In a worker process (ours, or a DataLoader's), exempt everything inherited from the parent from garbage
    collection.

    A worker inherits the parent's ~300k objects (torch alone): every full collection walks them all (~160 ms
    here, and copy-on-write copies of the pages it touches), and the loader's short-lived samples trigger one
    every few thousand samples: ~10 µs a sample. `gc.freeze` is what the gc docs advise after a fork."""
    global _FROZEN
    if not _FROZEN:
        gc.freeze()
        _FROZEN = True


def _dumps(obj) -> memoryview:
    return ForkingPickler.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)  # shared tensors travel as handles


def _worker_main(dataset, worker: int, workers: int, seed: int, prefetch: int, guess: bool, commands,
                 results) -> None:
    """A worker process: wait for commands, produce batches while it has credit.

    In epoch e, worker w produces what DataLoader's worker (w - e) % W would (`ShardStream.produce`), and the
    main process starts its round-robin at worker e % W: the same batches in the same order, but the share with
    one batch more (when the batches do not divide evenly) moves from worker to worker each epoch.
    Messages carry the run's tag (generation, epoch, skip_batches). Having finished its share of an epoch, a
    worker goes on with the next one (tag (generation + 1, epoch + 1, 0), up to `prefetch` batches) instead of
    waiting for the others: the usual next request, which then finds its first batches ready. Any other
    request replaces that guess."""
    import random
    import signal

    # Ctrl-C is for the training process (the whole process group gets it): it stops iterating, and these workers
    # stay usable for the next loop; they end when it closes the pipes or exits.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)
    random.seed(seed + worker)
    torch.manual_seed(seed + worker)
    np.random.seed((seed + worker) % 2**32)
    dataset._in_worker = worker
    freeze_inherited_objects()

    def start(tag: tuple[int, int, int]) -> Iterator:
        generation, epoch, skip_batches = tag
        return dataset.produce((worker - epoch) % workers, generation, epoch, skip_batches)

    epoch_batches: Iterator | None = None
    tag: tuple[int, int, int] = (0, 0, 0)
    credit, guessed = 0, False
    try:
        while True:
            while epoch_batches is None or credit == 0 or commands.poll():
                msg = commands.recv()
                if msg is None:
                    return
                kind, generation = msg[0], msg[1]
                if kind == "run":  # ("run", generation, epoch, skip_batches, credit)
                    if guessed and epoch_batches is not None and tuple(msg[1:4]) == tag:
                        guessed = False  # the guess was right: go on, with the credit it has left
                        continue
                    if epoch_batches is not None:
                        epoch_batches.close()
                    tag, credit, guessed = tuple(msg[1:4]), msg[4], False
                    epoch_batches = start(tag)
                elif generation == tag[0] and kind == "credit":
                    credit += 1
                elif generation == tag[0] and kind == "halt" and epoch_batches is not None:
                    epoch_batches.close()
                    epoch_batches = None
            try:
                batch = next(epoch_batches)
            except StopIteration:
                results.send_bytes(_dumps((tag, "end", None)))
                epoch_batches = None
                if guess and not guessed:
                    tag, credit, guessed = (tag[0] + 1, tag[1] + 1, 0), prefetch, True
                    epoch_batches = start(tag)
                continue
            except Exception as exc:  # noqa: BLE001 - handed to the main process, raised there
                if not guessed:  # a guess's error comes back when that epoch is asked for
                    results.send_bytes(_dumps((tag, "error", _describe(exc))))
                epoch_batches = None
                continue
            results.send_bytes(_dumps((tag, "batch", batch)))
            credit -= 1
    except (EOFError, BrokenPipeError):
        pass  # the main process closed the pipes or is gone


def _describe(exc: BaseException) -> tuple[str, str]:
    from .stream import LoaderError

    if isinstance(exc, LoaderError):
        return "LoaderError", str(exc)
    return type(exc).__name__, "".join(traceback.format_exception(exc)).rstrip()


class WorkerPool:
    """Persistent worker processes; `epoch(...)` yields the epoch's batches in order (batch i of epoch e from
    worker (i + e) % W)."""

    def __init__(self, dataset, workers: int, *, prefetch: int, seed: int = 0, guess: bool = True) -> None:
        ctx = multiprocessing.get_context()
        self.prefetch = max(1, prefetch)
        self.last: tuple[int, int, int] | None = None  # tag of the last epoch run to its end
        self.processes, self.commands, self.results = [], [], []
        for w in range(workers):
            cmd_out, cmd_in = ctx.Pipe(duplex=False)
            res_out, res_in = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_worker_main, name=f"shardloader-worker-{w}", daemon=True,
                               args=(dataset, w, workers, seed, self.prefetch, guess, cmd_out, res_in))
            proc.start()
            cmd_out.close()
            res_in.close()
            self.processes.append(proc)
            self.commands.append(cmd_in)
            self.results.append(res_out)
        self._finalizer = weakref.finalize(self, _shutdown, self.processes, self.commands, self.results)

    @property
    def healthy(self) -> bool:
        """Not closed, and every worker process still running."""
        return self._finalizer.alive and all(p.is_alive() for p in self.processes)

    def close(self) -> None:
        self._finalizer()

    def next_generation(self, current: int, epoch: int, skip_batches: int) -> int:
        """The generation for a run of (epoch, skip_batches) after generation `current`: one more when it is the
        epoch the workers went on with by themselves (their guess, generation current + 1), else three more, so
        that the slots of an abandoned run (current) and of a wrong guess (current + 1) count as left over."""
        last = self.last
        follows = last is not None and last[0] == current and (epoch, skip_batches) == (last[1] + 1, 0)
        return current + (1 if follows else 3)

    def epoch(self, generation: int, epoch: int, skip_batches: int) -> Iterator[dict]:
        """Start every worker on the epoch and yield its batches (numpy fields + slot, see `ShardStream.produce`).
        Closing the iterator early halts the workers."""
        tag = (generation, epoch, skip_batches)
        credit = pickle.dumps(("credit", generation))
        for cmd in self.commands:
            cmd.send(("run", *tag, self.prefetch))
        done = [False] * len(self.processes)
        w = epoch % len(done)
        try:
            while not all(done):
                if done[w]:
                    w = (w + 1) % len(done)
                    continue
                got, kind, payload = self._receive(w)
                if got != tag:
                    continue  # left over from an abandoned iteration, or a guess that was not asked for
                if kind == "end":
                    done[w] = True
                elif kind == "error":
                    from .stream import LoaderError

                    name, message = payload
                    done[w] = True
                    raise LoaderError(message) if name == "LoaderError" else WorkerError(
                        f"loader worker {w} failed:\n{message}")
                else:
                    self.commands[w].send_bytes(credit)  # the worker goes on while the caller trains
                    yield payload
                w = (w + 1) % len(done)
            self.last = tag
        finally:
            for w, finished in enumerate(done):
                if not finished and self.processes[w].is_alive():
                    try:
                        self.commands[w].send(("halt", generation))
                    except OSError:
                        pass

    def _receive(self, w: int) -> tuple:
        # Blocking is safe: only the worker holds the write end (this process closed its copy before starting
        # any other), so a worker that dies ends the read with EOFError.
        conn, proc = self.results[w], self.processes[w]
        try:
            return pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            proc.join(timeout=1)
            raise WorkerError(f"loader worker {w} (pid {proc.pid}) exited unexpectedly with code {proc.exitcode} "
                              "(killed? out of memory?)") from None


def _shutdown(processes, commands, results) -> None:
    for cmd in commands:
        try:
            cmd.send(None)
        except OSError:
            pass
    for proc in processes:
        proc.join(timeout=2)
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=2)
    for conn in (*commands, *results):
        conn.close()
