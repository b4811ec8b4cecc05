"""shardgen's exceptions, members of the one error family written in `shardgen.format.errors`.

`UserError` (bad input: one line, exit 2), `DataError` and its `SchemaError` (a manifest or shard that does not
parse) come from the format layer; `BadImage` is bad data too, a per-image failure that the build counts by reason
instead of raising.
"""

from __future__ import annotations

from .format.errors import DataError, FormatError, SchemaError, TarFormatError, UserError


class EncoderLoadError(UserError):
    """The text encoder could not be loaded (offline, not a model folder, incomplete tokenizer); the message says
    what to do."""


class BadImage(DataError):
    """A per-sample image failure; `reason` is the short counter name recorded in the manifest."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


__all__ = ["BadImage", "DataError", "EncoderLoadError", "FormatError", "SchemaError", "TarFormatError", "UserError"]
