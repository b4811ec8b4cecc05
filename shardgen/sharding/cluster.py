"""`--executor ray`: the build's image work and caption encoding as Ray tasks, with the same bytes as a local build.

The driver (the `shardgen build` process) keeps what makes a build reproducible: the input order, the rollover into
shards, the journal and the manifest, written last. What it hands out is pure work: each image task preprocesses
one shard's worth of input records (`samples_per_shard` of them) and returns the samples, each encoding task one
chunk of captions. A task is a pure function of its arguments, so Ray's retry of a task whose worker or node died
(`max_retries`) returns the same bytes, and a lost node costs the tasks it held: at most one shard's work each.
Shards are written by the driver to a temporary name and renamed (and uploaded with `--out s3://`) as they
complete, so a rerun after a lost driver skips every finished shard (the journal).

`RayPool` has the `submit(fn, *args).result()` shape of `concurrent.futures`, so `pack.iter_prepared` drives the
local process pool and Ray with one loop. Ray is imported only here, only for `--executor ray` (the `ray` extra).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlparse

from ..errors import UserError

TASKS_IN_FLIGHT_PER_CPU = 2
TASK_RETRIES = 3  # Ray re-runs a task whose worker process or node died this many times
RAY_CLIENT_PORT = 10001  # ray://host starts a Ray Client session on this port unless another is given
GCS_PORT = 6379  # host alone (or host:port) joins the cluster's head directly


class RayFuture:
    """One task's result, `concurrent.futures`-style."""

    def __init__(self, ref: Any) -> None:
        self._ref = ref

    def result(self) -> Any:
        """The task's return value; an exception it raised is re-raised as itself (a `UserError` stays one line),
        chained to Ray's error, which holds the remote traceback."""
        import ray

        try:
            return ray.get(self._ref)
        except ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, BaseException):
                raise exc.cause from exc
            raise


class RayPool:
    """Submits functions as Ray tasks, one CPU each; `slots` is how many tasks the cluster runs at once."""

    def __init__(self, slots: int, gpus: int, startup_s: float) -> None:
        self.slots = slots
        self.gpus = gpus  # GPUs in the cluster: caption encoding asks for one per task when there are any
        self.startup_s = startup_s  # how long joining or starting Ray took (reported apart by the benchmark)
        # image tasks submitted ahead: each holds a shard's worth of samples (~25 MB at 1000 per shard) in the
        # object store until the driver takes it, so two per CPU keep every CPU busy without piling up results
        self.in_flight = TASKS_IN_FLIGHT_PER_CPU * slots
        self._remote: dict[tuple[Callable, float], Any] = {}

    def submit(self, fn: Callable, *args: Any, num_gpus: float = 0) -> RayFuture:
        import ray

        key = (fn, num_gpus)
        if key not in self._remote:
            self._remote[key] = ray.remote(fn).options(num_cpus=1, num_gpus=num_gpus, max_retries=TASK_RETRIES,
                                                       name=f"shardgen.{fn.__name__}")
        return RayFuture(self._remote[key].remote(*args))


def check_address(address: str, *, timeout: float = 3.0) -> None:
    """Refuse at once a Ray address whose host does not answer (Ray itself would retry for a minute or more)."""
    import socket

    parsed = urlparse(address if "://" in address else f"gcs://{address}")
    port = parsed.port or (RAY_CLIENT_PORT if parsed.scheme == "ray" else GCS_PORT)
    try:
        with socket.create_connection((parsed.hostname or "", port), timeout=timeout):
            return
    except (OSError, ValueError) as exc:
        raise UserError(f"--ray-address {address}: no Ray cluster answers at {parsed.hostname}:{port} ({exc}); "
                        "start one (ray start --head) or leave the option out to start a local Ray") from None


@contextmanager
def ray_pool(*, address: str | None, workers: int) -> Iterator[RayPool]:
    """A Ray session for one build: an already initialized one (a test's, a notebook's) is used and left running;
    else `address` (or `RAY_ADDRESS`) is joined, or a local Ray with `workers` CPUs is started, and shut down after."""
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray needs Ray: pip install 'coco-clip-shards[ray]'") from None
    t0 = time.perf_counter()
    owned = not ray.is_initialized()
    if owned:
        address = address or os.environ.get("RAY_ADDRESS") or None
        if address not in (None, "auto", "local"):
            check_address(address)
        try:
            ray.init(address=address, num_cpus=None if address else workers, include_dashboard=False,
                     log_to_driver=False, configure_logging=False)
        except ConnectionError as exc:
            raise UserError(f"--ray-address {address}: cannot join the Ray cluster ({exc})".splitlines()[0]) from None
    try:
        resources = ray.cluster_resources()
        yield RayPool(max(1, int(resources.get("CPU", 1))), int(resources.get("GPU", 0)),
                      time.perf_counter() - t0)
    finally:
        if owned:
            ray.shutdown()
