"""Worker processes for the streaming loader: each runs `EpochPipeline.iter_batches` for its share of every epoch
and hands batches to the main process through shared memory (`slots.SlotRing`).

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
import os
import pickle
import threading
import time
import traceback
import weakref
from collections.abc import Iterator
from multiprocessing.reduction import ForkingPickler

import numpy as np
import torch
import torch.multiprocessing  # noqa: F401 - registers torch's tensor reducers with ForkingPickler

from .epoch import EpochPipeline
from shardgen.format.errors import DataError, UserError

from ..errors import WorkerError
from ..plan.seeds import worker_seed
from .slots import SharedMemory, SlotRing

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


def _exit_with_parent(parent: int, every_s: float = 1.0) -> None:
    """End this process when its parent is gone (killed, even by SIGKILL: nothing else would tell us). A thread
    polls the parent pid, as DataLoader's workers do; PR_SET_PDEATHSIG would follow the parent *thread* instead,
    and kill persistent workers when the thread that started them ends."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every_s)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _worker_main(pipeline: EpochPipeline, ring: SlotRing | None, worker: int, workers: int, seed: int,
                 prefetch: int, guess: bool, parent: int, commands, results) -> None:
    """A worker process: wait for commands, produce batches while it has credit.

    In epoch e, worker w produces what DataLoader's worker (w - e) % W would (`EpochPipeline.iter_batches`), and
    the main process starts its round-robin at worker e % W: the same batches in the same order, but the share
    with one batch more (when the batches do not divide evenly) moves from worker to worker each epoch.
    Messages carry the run's tag (generation, epoch, skip_batches, resumed). Having finished its share of an epoch,
    a worker goes on with the next one (tag (generation + 1, epoch + 1, 0, 0), up to `prefetch` batches) instead of
    waiting for the others: the usual next request, which then finds its first batches ready. Any other
    request replaces that guess."""
    # long: one small state machine (commands in, batches out), easier to check whole than split up
    import random
    import signal

    # Ctrl-C, SIGTERM and SIGUSR1 are for the training process (a terminal, SLURM signal the whole group): it stops
    # iterating, or checkpoints and exits; these workers end when it closes the pipes or exits (or kills them).
    for name in ("SIGINT", "SIGTERM", "SIGUSR1"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)
    _exit_with_parent(parent)
    torch.set_num_threads(1)
    own_seed = worker_seed(seed, worker)  # the `workers` stream (loaders.plan.seeds)
    random.seed(own_seed)
    torch.manual_seed(own_seed)
    np.random.seed(own_seed % 2**32)
    freeze_inherited_objects()
    memory = SharedMemory(ring, worker)

    def start(tag: tuple[int, int, int, int]) -> Iterator:
        generation, epoch, skip_batches, resumed = tag
        return pipeline.iter_batches((worker - epoch) % workers, generation=generation, epoch=epoch,
                                     skip_batches=skip_batches, memory=memory, resumed=bool(resumed))

    epoch_batches: Iterator | None = None
    tag: tuple[int, int, int, int] = (0, 0, 0, 0)
    credit, guessed = 0, False
    try:
        while True:
            while epoch_batches is None or credit == 0 or commands.poll():
                msg = commands.recv()
                if msg is None:
                    return
                kind, generation = msg[0], msg[1]
                if kind == "run":  # ("run", generation, epoch, skip_batches, resumed, credit)
                    if guessed and epoch_batches is not None and tuple(msg[1:5]) == tag:
                        guessed = False  # the guess was right: go on, with the credit it has left
                        continue
                    if epoch_batches is not None:
                        epoch_batches.close()
                    tag, credit, guessed = tuple(msg[1:5]), msg[5], False
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
                    tag, credit, guessed = (tag[0] + 1, tag[1] + 1, 0, 0), prefetch, True
                    epoch_batches = start(tag)
                continue
            except Exception as exc:  # noqa: BLE001 - not handled here: handed to the main process, raised there
                if not guessed:  # a guess's error comes back when that epoch is asked for
                    results.send_bytes(_dumps((tag, "error", _portable(exc, worker))))
                epoch_batches = None
                continue
            results.send_bytes(_dumps((tag, "batch", batch)))
            credit -= 1
    except (EOFError, BrokenPipeError):
        pass  # the main process closed the pipes or is gone


def _portable(exc: Exception, worker: int) -> Exception:
    """The exception to raise in the main process: one of the error family (`DataError`: bad data, `UserError`:
    bad input, e.g. a shard the storage refuses) as itself, so it exits as it would without workers (one line,
    exit 2), or as its family's base class with the same message if it does not survive pickling; anything else is
    a bug in the worker, sent as a WorkerError carrying its traceback."""
    if isinstance(exc, (DataError, UserError)):
        try:
            pickle.loads(_dumps(exc))
        except (pickle.PicklingError, TypeError, AttributeError):  # an __init__ of other arguments, a local class
            return (DataError if isinstance(exc, DataError) else UserError)(str(exc))
        return exc
    trace = "".join(traceback.format_exception(exc)).rstrip()
    return WorkerError(f"loader worker {worker} failed:\n{trace}")


class WorkerPool:
    """Persistent worker processes; `epoch(...)` yields the epoch's batches in order (batch i of epoch e from
    worker (i + e) % W)."""

    def __init__(self, pipeline: EpochPipeline, ring: SlotRing | None, workers: int, *, prefetch: int, seed: int = 0,
                 guess: bool = True) -> None:
        ctx = multiprocessing.get_context()
        self.prefetch = max(1, prefetch)
        self.last: tuple[int, int, int, int] | None = None  # tag of the last epoch run to its end
        self.processes, self.commands, self.results = [], [], []
        for w in range(workers):
            cmd_out, cmd_in = ctx.Pipe(duplex=False)
            res_out, res_in = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_worker_main, name=f"shardloader-worker-{w}", daemon=True,
                               args=(pipeline, ring, w, workers, seed, self.prefetch, guess, os.getpid(), cmd_out,
                                     res_in))
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

    def next_generation(self, current: int, epoch: int, skip_batches: int, resumed: int = 0) -> int:
        """The generation for a run of (epoch, skip_batches, resumed) after generation `current`: one more when it
        is the epoch the workers went on with by themselves (their guess, generation current + 1), else three
        more, so that the slots of an abandoned run (current) and of a wrong guess (current + 1) count as left
        over."""
        last = self.last
        follows = last is not None and last[0] == current and (epoch, skip_batches, resumed) == (last[1] + 1, 0, 0)
        return current + (1 if follows else 3)

    def epoch(self, generation: int, epoch: int, skip_batches: int, resumed: int = 0) -> Iterator[dict]:
        """Start every worker on the epoch and yield its batches (numpy fields + slot, see `slots.SharedMemory`).
        Closing the iterator early halts the workers."""
        tag = (generation, epoch, skip_batches, resumed)
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
                    done[w] = True
                    raise payload
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
            proc.kill()  # SIGTERM is ignored (above)
            proc.join(timeout=2)
    for conn in (*commands, *results):
        conn.close()
