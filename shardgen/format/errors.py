"""The project's error family and the one function that turns an exception into an exit code and one line.

Three kinds, never mixed:

- bad *data* (`DataError` and everything under it: the format's `FormatError`, the loader's `LoaderError` and
  `DecodeError`, the builder's `BadImage`): a shard, sample, manifest or image that does not parse. The message
  names the file or URL and, inside a shard, the sample key. Builders count it by reason, readers raise it or (by
  policy) skip it and count it, `shardgen verify` lists it (exit 1); any other command stops with one line, exit 2.
- bad *user input* (`UserError`): a path, option, credential or environment we cannot use. One line, exit 2.
- anything else is a bug and keeps its traceback: no `except Exception` on a data path.

`report` is the one mapping from an exception to an exit code and its line; `shardgen`, `models.train` and
`models.evaluate` all call it (`except HANDLED as exc: return report(prog, exc)`), so the same failure exits the
same way from every command. Exceptions cross process boundaries as pickled instances of these classes (their
only argument is the message).
"""

from __future__ import annotations

import sys
from typing import TextIO


class UserError(Exception):
    """Bad input or environment (missing file, bad option, malformed annotations, offline without a model)."""


class DataError(Exception):
    """Bad data: a file, shard, sample or image that does not parse; the message names where."""


class FormatError(DataError, ValueError):
    """Data that does not follow the shard format: the message names where. (A `ValueError` too, as it always was,
    for callers that caught it as one.)"""


class SchemaError(FormatError):
    """A manifest or sample that does not follow the format's contract."""


class TarFormatError(FormatError):
    """A tar stream that is truncated or malformed; the message names the byte offset."""


# What a command line handles itself (one line, no traceback); anything else propagates with its traceback.
HANDLED = (UserError, DataError, KeyboardInterrupt)

EXIT_BAD_INPUT = 2  # bad user input and bad data alike: the user has something to fix before rerunning
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C


def exit_code(exc: BaseException) -> int | None:
    """The exit code for `exc`, or None for a bug (which must keep its traceback)."""
    if isinstance(exc, KeyboardInterrupt):  # models.train's SIGTERM, SIGUSR1 carry their `signum`: 143, 138
        return EXIT_INTERRUPTED - 2 + getattr(exc, "signum", 2)
    if isinstance(exc, (UserError, DataError)):
        return EXIT_BAD_INPUT
    return None


def error_line(prog: str, exc: BaseException, *, interrupted: str = "interrupted") -> str:
    """`exc` as the one line a command prints: `prog: error: ...`, `prog: error: bad data: ...`, or for Ctrl-C
    `prog: <the exception's own message, else interrupted>`. Whitespace (a multi-line message) is collapsed."""
    text = " ".join(str(exc).split())
    if isinstance(exc, KeyboardInterrupt):
        return f"{prog}: {text or interrupted}"
    kind = "bad data: " if isinstance(exc, DataError) else ""
    return f"{prog}: error: {kind}{text}"


def report(prog: str, exc: BaseException, *, interrupted: str = "interrupted", file: TextIO | None = None) -> int:
    """Print `exc`'s one line to stderr and return its exit code; a bug is re-raised with its traceback."""
    code = exit_code(exc)
    if code is None:
        raise exc
    print(error_line(prog, exc, interrupted=interrupted), file=file or sys.stderr)
    return code
