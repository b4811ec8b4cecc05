"""`--executor ray`: the build's tasks on a Ray cluster (or a Ray started here), with the same bytes as a local build.

A task is a pure function of its arguments, so Ray's retry of a task whose worker or node died (`max_retries`)
returns the same bytes, and a lost node costs the tasks it held: at most one shard's work each. Shard tasks write
their own shard to the output (`sharding.shardtask`); what comes back to the driver is a summary.

Joining a cluster as Ray documents it: `HOST:PORT` (the head's GCS), `auto` (the cluster this machine belongs to),
`ray://HOST[:PORT]` (Ray Client). A cluster started with token authentication (`RAY_AUTH_MODE=token`, the default
of `ray start --head` from Ray 2.59 on) is joined with the token found the way Ray finds it: `RAY_AUTH_TOKEN`, the
file `RAY_AUTH_TOKEN_PATH` names, or `~/.ray/auth_token`. An address whose port does not answer, or answers but is
no Ray (not gRPC), is refused in seconds instead of Ray's minutes of retries. Ray is imported only here, only for
`--executor ray` (the `ray` extra).
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ...errors import UserError
from . import CPU_TASK, Resources, TaskLost

NAME = "ray"
TASK_RETRIES = 3  # Ray re-runs a task whose worker process or node died this many times
RAY_CLIENT_PORT = 10001  # ray://host starts a Ray Client session on this port unless another is given
GCS_PORT = 6379  # host alone (or host:port) joins the cluster's head directly
PROBE_TIMEOUT_S = 3.0
# The HTTP/2 client preface and an empty SETTINGS frame: a gRPC server (Ray's GCS, the Ray Client server) answers
# with a SETTINGS frame of its own; anything else (an HTTP/1 server, a database) answers otherwise or not at all.
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
_H2_SETTINGS = 4


class RayFuture:
    """One task's result, `concurrent.futures`-style."""

    def __init__(self, ref: Any) -> None:
        self._ref = ref

    def result(self) -> Any:
        """The task's return value; an exception it raised is re-raised as itself (a `UserError` stays one line),
        chained to Ray's error, which holds the remote traceback."""
        import ray

        lost = (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError, ray.exceptions.ObjectLostError,
                ray.exceptions.TaskUnschedulableError, ray.exceptions.RaySystemError)
        try:
            return ray.get(self._ref)
        except ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, lost):
                raise TaskLost(f"Ray: {type(exc.cause).__name__}") from exc
            if isinstance(exc.cause, BaseException):
                raise exc.cause from exc
            raise
        except lost as exc:
            raise TaskLost(f"Ray gave up after {TASK_RETRIES} retries: {type(exc).__name__}") from exc


class RayExecutor:
    """Submits functions as Ray tasks; `capacity` is how many the cluster runs at once (its CPUs)."""

    name = NAME
    runs_here = False

    def __init__(self, capacity: int, gpus: int, startup_s: float) -> None:
        self.capacity = capacity
        self.gpus = gpus  # GPUs in the cluster: caption encoding asks for one per task when there are any
        self.startup_s = startup_s  # how long joining or starting Ray took (reported apart by the benchmark)
        self._remote: dict[tuple[Callable, Resources], Any] = {}

    def submit(self, fn: Callable, /, *args: Any, resources: Resources = CPU_TASK) -> RayFuture:
        import ray

        key = (fn, resources)
        if key not in self._remote:
            self._remote[key] = ray.remote(fn).options(num_cpus=resources.cpus, num_gpus=resources.gpus,
                                                       max_retries=TASK_RETRIES, name=f"shardgen.{fn.__name__}")
        return RayFuture(self._remote[key].remote(*args))

    def each_node(self, fn: Callable, /, *args: Any) -> list[RayFuture]:
        """`fn(*args)` on every alive node, pinned there (a probe: no CPU asked, so a head without CPUs takes it too)."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        remote = ray.remote(fn)
        return [RayFuture(remote.options(num_cpus=0, max_retries=0, name=f"shardgen.{fn.__name__}",
                                         scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False))
                          .remote(*args))
                for node in ray.nodes() if node.get("Alive")]


def _host_port(address: str) -> tuple[str, int]:
    parsed = urlparse(address if "://" in address else f"gcs://{address}")
    try:
        port = parsed.port or (RAY_CLIENT_PORT if parsed.scheme == "ray" else GCS_PORT)
    except ValueError:
        raise UserError(f"--ray-address {address}: not HOST:PORT, auto or ray://HOST[:PORT]") from None
    if not parsed.hostname:
        raise UserError(f"--ray-address {address}: not HOST:PORT, auto or ray://HOST[:PORT]")
    return parsed.hostname, port


def check_address(address: str, *, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Refuse in seconds a Ray address whose port does not answer, or answers but speaks no gRPC (no Ray there);
    Ray itself would retry for minutes."""
    host, port = _host_port(address)
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            conn.settimeout(timeout)
            conn.sendall(_H2_PREFACE)
            head = b""
            while len(head) < 9:
                block = conn.recv(9 - len(head))
                if not block:
                    break
                head += block
    except OSError as exc:
        raise UserError(f"--ray-address {address}: no Ray cluster answers at {host}:{port} ({exc}); start one "
                        "(ray start --head) or leave the option out to start a local Ray") from None
    if len(head) < 9 or head[3] != _H2_SETTINGS:
        raise UserError(f"--ray-address {address}: {host}:{port} answers, but it is not a Ray cluster (no gRPC); "
                        f"give the head's GCS address (ray start --head prints it, port {GCS_PORT} by default) or "
                        f"ray://HOST:{RAY_CLIENT_PORT}")


def token_source() -> str | None:
    """Where Ray would find its authentication token (`RAY_AUTH_TOKEN`, `RAY_AUTH_TOKEN_PATH`,
    `~/.ray/auth_token`), or None when there is none."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "RAY_AUTH_TOKEN"
    named = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if named:
        return named if Path(named).is_file() else None
    default = Path.home() / ".ray" / "auth_token"
    return str(default) if default.is_file() else None


_AUTH_FIX = ("the cluster asks for an authentication token (Ray's default from 2.59 on), none was found here: on the "
             "head node run `ray get-auth-token` and put the token in RAY_AUTH_TOKEN, or in ~/.ray/auth_token here")


@contextmanager
def _held_stderr() -> Iterator[list[str]]:
    """File descriptor 2 (C++ logging included) goes to a temporary file for the block; what was written there is
    in the yielded list once the block is left."""
    sys.stderr.flush()
    saved, written = os.dup(2), []
    with tempfile.TemporaryFile("w+", errors="replace") as held:
        os.dup2(held.fileno(), 2)
        try:
            yield written
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            written.append(held.read())


def _use_token_if_found() -> None:
    """Send the token where Ray would find one: what `ray.init(address="auto")` does by itself, and a joined
    `HOST:PORT` does only when `RAY_AUTH_MODE=token` is set before Ray reads its configuration."""
    if "RAY_AUTH_MODE" in os.environ or token_source() is None:
        return
    os.environ["RAY_AUTH_MODE"] = "token"
    try:  # Ray already imported (a notebook, a test): it re-reads its configuration here
        from ray._private.authentication.authentication_token_setup import _enable_token_auth
    except ImportError:
        return
    _enable_token_auth()


@contextmanager
def start(*, workers: int, address: str | None = None, progress: bool = False) -> Iterator[RayExecutor]:
    """A Ray session for one build: an already initialized one (a test's, a notebook's) is used and left running;
    else `address` (or `RAY_ADDRESS`) is joined, or a local Ray with `workers` CPUs is started, and shut down
    after."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address not in (None, "auto", "local"):
        check_address(address)
        _use_token_if_found()
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray needs Ray: pip install 'coco-clip-shards[ray]'") from None
    t0 = time.perf_counter()
    owned = not ray.is_initialized()
    if owned:
        try:
            with _held_stderr() as held:  # Ray's core worker prints a line per retry; the user gets one line
                ray.init(address=address, num_cpus=None if address else workers, include_dashboard=False,
                         log_to_driver=False, configure_logging=False, logging_level="ERROR")
            sys.stderr.write("".join(held))
        except (ConnectionError, RuntimeError, ValueError) as exc:
            text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if "auth" in text.lower() or "token" in text.lower() or token_source() is None:
                raise UserError(f"--ray-address {address}: cannot join the Ray cluster ({text}); if {_AUTH_FIX}") \
                    from None
            raise UserError(f"--ray-address {address}: cannot join the Ray cluster ({text})") from None
    try:
        resources = ray.cluster_resources()
        yield RayExecutor(max(1, int(resources.get("CPU", 1))), int(resources.get("GPU", 0)),
                          time.perf_counter() - t0)
    finally:
        if owned:
            ray.shutdown()
