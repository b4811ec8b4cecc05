"""A frozen remote (a server that accepts connections and never answers, like a SIGSTOPped endpoint) fails each
read attempt within the storage timeouts, and the loader warns before it retries, then raises: nothing stalls
for the clients' default minutes."""

from __future__ import annotations

import logging
import socket
import time

import pytest

from loaders import LoaderError
from loaders.plan.ranks import Span
from loaders.read.spans import iter_span
from shardgen.format import UserError, open_url, storage, with_timeouts


@pytest.fixture
def frozen_port(monkeypatch):
    """A listening socket nobody accepts on: connects succeed (the kernel's backlog), no byte ever comes back."""
    monkeypatch.setattr(storage, "READ_TIMEOUT_S", 0.25)
    monkeypatch.setattr(storage, "CONNECT_TIMEOUT_S", 0.5)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    yield sock.getsockname()[1]
    sock.close()


def _s3(port: int) -> dict:
    return {"key": "k", "secret": "s", "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}"}}


def test_caller_options_win_key_by_key():
    opts = with_timeouts("s3://b/k", {"config_kwargs": {"read_timeout": 120}, "anon": True})
    assert opts["config_kwargs"]["read_timeout"] == 120 and opts["config_kwargs"]["connect_timeout"] > 0
    assert opts["anon"] is True and "config_kwargs" not in with_timeouts("/local/path", {})


@pytest.mark.parametrize("scheme", ["http", pytest.param("s3", marks=pytest.mark.slow)])
def test_the_loader_warns_retries_then_raises_on_a_frozen_server(frozen_port, scheme, caplog):
    url = f"http://127.0.0.1:{frozen_port}/train-000000.tar" if scheme == "http" else "s3://b/train-000000.tar"
    opts = {} if scheme == "http" else _s3(frozen_port)
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="loaders"), pytest.raises(LoaderError, match="read failed"):
        list(iter_span(url, Span(0, 0, 4), count=4, retries=1, backoff=0.0, storage_options=opts))
    assert any("retrying (1/1)" in r.getMessage() for r in caplog.records)
    # two attempts of a few timeouts each (s3: HEAD and GET, S3_READ_RETRIES tries); with the clients' defaults
    # (aiohttp: 5 min in all; s3fs 5 tries × botocore's retries × 15 s) this would take minutes
    assert time.monotonic() - t0 < 15


def test_a_frozen_manifest_read_is_one_line(frozen_port):
    from loaders import make_loader

    with pytest.raises(UserError, match="cannot read"):
        make_loader(f"http://127.0.0.1:{frozen_port}/shards", batch_size=2)


def test_readers_get_their_own_s3_instance_and_writers_keep_s3fs_retries(frozen_port):
    import fsspec

    opts = _s3(frozen_port)
    writer, _ = fsspec.core.url_to_fs("s3://b/", **with_timeouts("s3://b/", opts))
    from botocore.exceptions import BotoCoreError

    with pytest.raises((BotoCoreError, OSError)):  # the frozen server times the read out
        open_url("s3://b/x.tar", **opts).read()
    assert writer.retries == 5 and "retries" not in with_timeouts("s3://b/", opts)["config_kwargs"]
