"""Exceptions that mean "the user gave us something we cannot use": the CLI prints them as one line, exit 2."""

from __future__ import annotations


class UserError(Exception):
    """Bad input or environment (missing file, malformed annotations, offline without a cached model)."""


class BadImage(Exception):
    """A per-sample image failure; `reason` is the short counter name recorded in the manifest."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
