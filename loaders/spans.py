"""Stage 0: read planned spans of shards (I/O only). Remote reads are retried with backoff and resume after the
last sample handed out; local read errors and corrupt tars fail at once, as `LoaderError` naming URL and key. A
shard that holds fewer or more samples than its manifest says is bad data too: epochs are exact or they fail.
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
    open_url,
    redact,
)

from .errors import LoaderError
from .plan import Span

log = logging.getLogger("loaders")


def iter_span(url: str, span: Span, *, count: int, retries: int, backoff: float, storage_options: dict
              ) -> Iterator[tuple[list[str], dict[str, list]]]:
    """Samples [span.start, span.stop) of the shard at `url`, which holds `count` samples by its manifest, as
    (keys, {ext: contents}) groups (views: see `iter_sample_groups(zero_copy=True)`)."""
    remote = is_remote(url)
    done = 0
    for attempt in range(retries + 1):
        key = None
        try:
            with open_url(url, **storage_options) as fh:
                i = 0  # index in the shard of the group's first sample
                groups = iter_sample_groups(fh, zero_copy=True)
                for keys, fields in groups:
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
                    raise LoaderError(f"{redact(url)}: {key or '<start>'}: shard ends after {i} samples; its "
                                      f"manifest says {count}")
                if span.stop == count and (i > count or next(groups, None) is not None):
                    raise LoaderError(f"{redact(url)}: shard holds more samples than the {count} its manifest "
                                      "says")
            return
        except FormatError as exc:  # the bytes are wrong: reading them again will not help
            raise LoaderError(f"{redact(url)}: {key or '<start>'}: corrupt or truncated shard ({exc})") from None
        except client_errors() as exc:  # a dropped connection, a timeout: worth another try
            if not remote or attempt >= retries:
                raise LoaderError(f"{redact(url)}: {key or '<start>'}: read failed ({redact(str(exc))})") from exc
            log.warning("%s: %s; retrying (%d/%d)", redact(url), redact(str(exc)), attempt + 1, retries)
            time.sleep(backoff * 2 ** attempt)
