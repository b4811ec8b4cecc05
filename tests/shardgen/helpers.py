"""The shard readers moved to `tests/helpers.py` (the one module of shared test helpers); re-exported here for
tests that still import them from this path."""

from ..helpers import DROP, digests, read_all, rewrite_member

__all__ = ["DROP", "digests", "read_all", "rewrite_member"]
