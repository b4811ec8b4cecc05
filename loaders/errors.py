"""The loader's exceptions, following the project's error policy (`shardgen.format.errors`).

- `LoaderError`: bad data — a shard or sample that does not read, parse or decode. The message starts with the
  shard URL (credentials redacted) and the sample key. `on_error="skip"` skips and counts these; nothing else.
- `SourceError`: bad user input — the source given to `make_loader` cannot be used (no manifest, unknown shards,
  wrong embedding size). A `UserError`, so command lines print it as one line.
- `WorkerError`: a worker process died (killed, out of memory) or hit a bug; a bug's traceback is in the message.

Exceptions raised in a worker process reach the caller as the same type (pickled instances), not by name.
"""

from __future__ import annotations

from shardgen.format.errors import UserError


class LoaderError(RuntimeError):
    """A shard or sample could not be read; the message names the shard URL and sample key."""


class DecodeError(ValueError):
    """A JPEG that does not decode (or decodes to an unusable size); wrapped into a LoaderError with its key."""


class SourceError(UserError, ValueError):
    """The shard source cannot be used (missing manifest, unknown shards, incompatible schema)."""


class WorkerError(RuntimeError):
    """A worker process failed or died; the message says which and why."""
