"""Stage 0: read planned spans of shards (I/O only). A span that starts inside a shard opens it at its first
sample through the shard's index when it has one (`seek`), else reads through the samples before it. Remote reads
are retried with backoff and resume after the last sample handed out; local read errors and corrupt tars fail at
once, as `LoaderError` naming URL and key. A shard that holds fewer or more samples than its manifest says is bad
data too: epochs are exact or they fail.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from shardgen.format import (
    FormatError,
    client_errors,
    is_remote,
    iter_sample_groups,
    open_at,
    open_local,
    redact,
)

from shardgen.format.tarheader import BLOCK, checksum_ok

from ..errors import LoaderError
from ..plan.ranks import Span
from .seek import check_landing, load_index

log = logging.getLogger("loaders")


def iter_span(url: str, span: Span, *, count: int, retries: int, backoff: float, storage_options: dict
              ) -> Iterator[tuple[list[str], dict[str, list]]]:
    """Samples [span.start, span.stop) of the shard at `url`, which holds `count` samples by its manifest, as
    (keys, {ext: contents}) groups (views: see `iter_sample_groups(zero_copy=True)`)."""
    remote = is_remote(url)
    done = 0
    index = load_index(url, count=count, storage_options=storage_options) if span.start else None
    for attempt in range(retries + 1):
        key = None
        first = span.start + done if index is not None else 0  # the first sample read: seek to it
        try:
            with open_at(url, index.starts[first] if first else 0, **storage_options) as fh:
                i = first  # index in the shard of the group's first sample
                groups = iter_sample_groups(fh, zero_copy=True)
                for keys, fields in groups:
                    if i == first and first:
                        check_landing(index, first, keys[0])
                    lo, hi = max(span.start + done - i, 0), min(span.stop - i, len(keys))
                    i += len(keys)
                    key = keys[-1]
                    if lo < hi:
                        if lo or hi < len(keys):
                            keys, fields = keys[lo:hi], {e: c[lo:hi] for e, c in fields.items()}
                        yield keys, fields
                        done += len(keys)
                    if i >= span.stop:
                        break
                if i < span.stop:
                    if first:  # counted from where the index put sample `first`: the index's count is off
                        raise LoaderError(_index_misplaces(index, url, first, f"the shard ends {i - first} samples "
                                                           f"later, at sample {i} of the {count} its manifest says"))
                    raise LoaderError(f"{redact(url)}: {key or '<start>'}: shard ends after {i} samples; its "
                                      f"manifest says {count}")
                if span.stop == count and (i > count or next(groups, None) is not None):
                    if first:
                        raise LoaderError(_index_misplaces(index, url, first, "the shard holds more samples after "
                                                           f"it than the {count} its manifest says"))
                    raise LoaderError(f"{redact(url)}: shard holds more samples than the {count} its manifest "
                                      "says")
            return
        except FormatError as exc:  # the bytes are wrong: reading them again will not help
            if first and key is None and _no_header_at(url, index.starts[first]):  # no header where a sample starts
                raise LoaderError(_index_misplaces(index, url, first, f"no sample starts there ({exc})")) from None
            if first and key is None:  # past a local shard's end (a cut shard), or a remote one: either may be at fault
                raise LoaderError(f"{redact(url)}: byte {index.starts[first]} (sample {first} by {redact(index.url)}): "
                                  f"corrupt or truncated shard, or an index that does not fit it ({exc})") from None
            raise LoaderError(f"{redact(url)}: {key or '<start>'}: corrupt or truncated shard ({exc})") from None
        except client_errors() as exc:  # a dropped connection, a timeout: worth another try
            if not remote or attempt >= retries:
                raise LoaderError(f"{redact(url)}: {key or '<start>'}: read failed ({redact(str(exc))})") from exc
            log.warning("%s: %s; retrying (%d/%d)", redact(url), redact(str(exc)), attempt + 1, retries)
            time.sleep(backoff * 2 ** attempt)


def _no_header_at(url: str, offset: int) -> bool:
    """Whether the 512 bytes at `offset` of the local shard at `url` are no tar header (a remote shard is not read
    again): then the index that put a sample there is at fault, not the shard (a cut shard fails further on)."""
    if is_remote(url):
        return False
    try:
        with open_local(url.removeprefix("file://")) as fh:
            fh.seek(offset)
            header = fh.read(BLOCK)
    except OSError:
        return False
    return len(header) == BLOCK and not checksum_ok(header)


def _index_misplaces(index, url: str, sample: int, what: str) -> str:
    """A read that seeked by the shard's index went wrong: the index is blamed, not the shard (`shardgen verify`
    checks the two against each other)."""
    return (f"{redact(index.url)}: places sample {sample} at byte {index.starts[sample]} of {redact(url)}, but "
            f"{what}: the index does not fit its shard (shardgen verify checks both); rebuild the index (rerun "
            "shardgen build on the folder) or delete it")
