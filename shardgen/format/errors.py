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
same way from every command. It is also the one translation of the operating system's refusals: an `OSError` whose
errno is in `USER_ERRNOS` (a full disk or quota, a read-only or forbidden folder), raised by any write, is the
user's to fix and exits 2 with one line naming the file (`os_error_message`); any other `OSError` is a bug. The
line is passed through `redact` and `printable_name` (`redact.py`): no password and no control character reaches
the terminal, whichever message carried them. Exceptions cross process boundaries as pickled instances of these
classes (their only argument is the message).
"""

from __future__ import annotations

import errno
import os
import sys
from typing import TextIO

from .redact import printable_name, redact


class _Redacted(Exception):
    """An exception whose text arguments are made safe when it is made: a URL's password never reaches its
    message, nor a control character of a name it quotes (an ESC sequence), whoever prints, logs or pickles it (the
    one choke point for every message of the family)."""

    def __init__(self, *args: object) -> None:
        super().__init__(*(printable_name(redact(a), keep_lines=True) if isinstance(a, str) else a for a in args))


class UserError(_Redacted):
    """Bad input or environment (missing file, bad option, malformed annotations, offline without a model)."""


class DataError(_Redacted):
    """Bad data: a file, shard, sample or image that does not parse; the message names where."""


class FormatError(DataError, ValueError):
    """Data that does not follow the shard format: the message names where. (A `ValueError` too, as it always was,
    for callers that caught it as one.)"""


class SchemaError(FormatError):
    """A manifest or sample that does not follow the format's contract."""


class TarFormatError(FormatError):
    """A tar stream that is truncated or malformed; the message names the byte offset."""


# The operating system's refusals that the user fixes (free space, a quota, permissions, a read-only mount): one
# line and exit 2 from every command, wherever the write happened.
USER_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})

# What a command line catches (one line, no traceback); `report` re-raises the rest (an OSError outside
# USER_ERRNOS) with its traceback.
HANDLED = (UserError, DataError, KeyboardInterrupt, OSError)

EXIT_BAD_INPUT = 2  # bad user input and bad data alike: the user has something to fix before rerunning
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C


def is_user_os_error(exc: BaseException) -> bool:
    """Whether `exc` is the operating system refusing a write the user can make possible (`USER_ERRNOS`)."""
    return isinstance(exc, OSError) and exc.errno in USER_ERRNOS


def os_error_message(exc: OSError, *, what: str = "") -> str:
    """One line for a refused write: the file (or `what`), the system's reason and what to do about it."""
    where = exc.filename or what or "a file"
    reason = (exc.strerror or os.strerror(exc.errno)) if exc.errno else str(exc)
    hint = ("free some space, then rerun the same command (it resumes where it can)"
            if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "check the folder's permissions, or choose another one")
    return f"{where}: {reason}; {hint}"


def user_os_error(exc: OSError, *, what: str = "") -> UserError:
    """`exc` (in `USER_ERRNOS`) as a `UserError` with `os_error_message`'s line, for a caller that wants to add to
    it or to raise it across a process boundary."""
    return UserError(os_error_message(exc, what=what))


def exit_code(exc: BaseException) -> int | None:
    """The exit code for `exc`, or None for a bug (which must keep its traceback)."""
    if isinstance(exc, KeyboardInterrupt):  # models.train's SIGTERM, SIGUSR1 carry their `signum`: 143, 138
        return EXIT_INTERRUPTED - 2 + getattr(exc, "signum", 2)
    if isinstance(exc, (UserError, DataError)) or is_user_os_error(exc):
        return EXIT_BAD_INPUT
    return None


def parser_exit_code(exc: SystemExit) -> int:
    """The code of argparse's `SystemExit` (0 for `--help`, 2 for a usage error), for a `main(argv)` that returns
    its code instead of exiting."""
    return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else EXIT_BAD_INPUT


def error_line(prog: str, exc: BaseException, *, interrupted: str = "interrupted") -> str:
    """`exc` as the one line a command prints: `prog: error: ...`, `prog: error: bad data: ...`, or for Ctrl-C
    `prog: <the exception's own message, else interrupted>`. Whitespace (a multi-line message) is collapsed,
    passwords in URLs are hidden and control characters escaped."""
    text = os_error_message(exc) if is_user_os_error(exc) else str(exc)
    text = printable_name(redact(" ".join(text.split())))
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
