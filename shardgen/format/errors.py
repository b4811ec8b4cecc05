"""The project's error policy, and the base classes every package's `errors` module builds on.

Three kinds, never mixed:

- bad *data* (`FormatError` and its kinds; the loader's `LoaderError`): a shard, sample, manifest or image that
  does not parse. The message names the file or URL and, inside a shard, the sample key. Builders count it by
  reason, readers raise it or (by policy) skip it and count it, `shardgen verify` lists it (exit 1).
- bad *user input* (`UserError`): a path, option, credential or environment we cannot use. Command lines print
  its message as one line and exit 2.
- anything else is a bug and keeps its traceback: no `except Exception` on a data path.

Exceptions cross process boundaries as pickled instances of these classes (their only argument is the message).
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input or environment (missing file, bad option, malformed annotations, offline without a model)."""


class FormatError(ValueError):
    """Data that does not follow the shard format: the message names where."""


class SchemaError(FormatError):
    """A manifest or sample that does not follow the format's contract."""


class TarFormatError(FormatError):
    """A tar stream that is truncated or malformed; the message names the byte offset."""
