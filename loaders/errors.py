"""The loader's exceptions, members of the project's one error family (`shardgen.format.errors`).

- `LoaderError`: bad data (a `DataError`) — a shard or sample that does not read, parse or decode. The message
  starts with the shard URL (credentials redacted) and the sample key. `on_error="skip"` skips and counts these;
  nothing else.
- `DecodeError`: a JPEG that does not decode (a `DataError`); the loader wraps it into a `LoaderError` with its key.
- `SourceError`: bad user input — the source given to `make_loader` cannot be used (no manifest, unknown shards,
  wrong embedding size, fewer shards than workers). A `UserError` (and no `ValueError`, so no `except ValueError`
  meant for something else can take it for a bug's message), so command lines print it as one line.
- `StateError`: a state dict that does not fit this loader (other shards, another seed mid-epoch, malformed).
- `WorkerError`: a worker process died (killed, out of memory) or hit a bug; a bug's traceback is in the message.
  Any other error of the family raised in a worker (a `DataError`, a `UserError`) reaches the caller as itself.

Exceptions raised in a worker process reach the caller as the same type (pickled instances), not by name.
"""

from __future__ import annotations

from shardgen.format.errors import DataError, UserError


class LoaderError(DataError):
    """A shard or sample could not be read; the message names the shard URL and sample key."""


class DecodeError(DataError):
    """A JPEG that does not decode (or decodes to an unusable size); wrapped into a LoaderError with its key."""


class SourceError(UserError):
    """The shard source cannot be used (missing manifest, unknown shards, incompatible schema, too few shards)."""


class StateError(UserError, ValueError):
    """A state dict this loader cannot continue from; the message says why. (A `ValueError` too, as it was.)"""


class WorkerError(RuntimeError):
    """A worker process failed or died; the message says which and why."""
