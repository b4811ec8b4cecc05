"""Caption encoding survives a real interrupt: a killed run leaves finished chunks, the rerun encodes only the rest
and ends with bitwise the same embeddings as an uninterrupted run; the chunks go once the cache is written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from shardgen.sources.record import ImageRecord
from shardgen.sources.listing import Listing
from shardgen.text.cache import encode_captions, encode_resumable, encoder_fingerprint, parts_dir

CHUNK, BATCH = 8, 4  # tiny chunks so a few hundred captions make dozens of them


def _images(n: int) -> Listing:
    words = ["red", "green", "blue", "small", "large", "circle", "square", "triangle", "grass", "sky", "sand", "night"]
    return Listing.from_records(ImageRecord(image_id=i, file_name=f"{i}.jpg", path=Path(f"{i}.jpg"),
                      captions=tuple(" ".join(words[(i * 7 + j * 3 + k) % len(words)] for k in range(3 + (i + j) % 9))
                                     + f" {i}.{j}" for j in range(5)))
            for i in range(n))


CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import shardgen.text.encoder
    from shardgen.text.cache import encode_captions
    from tests.shardgen.text.test_embeddings_resume import _images, CHUNK, BATCH

    real = shardgen.text.encoder.TextEncoder.encode_ids
    def slow(self, ids, **kw):  # slow enough that the parent's kill lands in the middle
        time.sleep(0.15)
        return real(self, ids, **kw)
    shardgen.text.encoder.TextEncoder.encode_ids = slow
    encode_captions(_images(int(sys.argv[3])), text_encoder=sys.argv[1], cache=Path(sys.argv[2]), chunk=CHUNK,
                    batch_size=BATCH)
    print("finished")
""")


@pytest.mark.slow
def test_killed_encoding_resumes_to_identical_embeddings(tmp_path, tiny_encoder, monkeypatch):
    images = _images(32)  # 160 captions → 20 chunks
    cache = tmp_path / "train_text_embeddings.pt"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[3]), *sys.path])}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(tiny_encoder), str(cache), "32"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(list(parts_dir(cache).glob("*/chunk-*.npy"))) < 3 and proc.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    alive = proc.poll() is None
    proc.send_signal(signal.SIGKILL)  # no handler runs: only what was on disk counts
    out, err = proc.communicate(timeout=60)
    assert alive and b"finished" not in out, err.decode()[-2000:]
    done = len(list(parts_dir(cache).glob("*/chunk-*.npy")))
    assert 3 <= done < 20

    import shardgen.text.encoder

    calls = []
    real = shardgen.text.encoder.TextEncoder.encode_ids
    monkeypatch.setattr(shardgen.text.encoder.TextEncoder, "encode_ids", lambda self, ids, **kw: calls.append(len(ids))
                        or real(self, ids, **kw))
    resumed, dirty = encode_captions(images, text_encoder=str(tiny_encoder), cache=cache, chunk=CHUNK,
                                     batch_size=BATCH)
    assert dirty and len(calls) == 20 - done  # only the chunks the killed run had not finished
    assert not parts_dir(cache).exists()  # the cache holds them now
    fresh, _ = encode_captions(images, text_encoder=str(tiny_encoder), cache=tmp_path / "other.pt", chunk=CHUNK,
                               batch_size=BATCH)
    n = images.n_captions
    assert np.array_equal(resumed.rows(0, n), fresh.rows(0, n))  # bitwise, every caption in listing order


@pytest.mark.slow
def test_chunked_encoding_equals_one_pass(tmp_path, tiny_encoder):
    """Chunk size a multiple of the batch size gives the batches of one global length-sorted pass: same bits."""
    from shardgen.text.encoder import TextEncoder

    images = _images(20)
    emb, _ = encode_captions(images, text_encoder=str(tiny_encoder), cache=tmp_path / "c.pt", chunk=8, batch_size=4)
    encoder = TextEncoder(str(tiny_encoder))
    texts = list(dict.fromkeys(images.captions))  # the cache's rows: the unique texts, in listing order
    ids, _ = encoder.tokenize(texts)
    assert torch.equal(torch.from_numpy(np.array(emb.table)), encoder.encode_ids(ids, batch_size=4).to(torch.float16))


@pytest.mark.slow
def test_damaged_chunk_is_encoded_again(tmp_path, tiny_encoder):
    texts = list(_images(6).captions)
    cache = tmp_path / "c.pt"
    kw = dict(text_encoder=str(tiny_encoder), fingerprint=encoder_fingerprint(str(tiny_encoder)), cache=cache,
              device="cpu", batch_size=BATCH, chunk=CHUNK)
    first, _, _ = encode_resumable(texts, **kw)  # the chunks stay until a cache is written
    chunks = sorted(parts_dir(cache).glob("*/chunk-*.npy"))
    assert len(chunks) == 4  # 30 captions in chunks of 8
    chunks[1].write_bytes(chunks[1].read_bytes()[:100])  # torn by a crash of another kind
    again, _, _ = encode_resumable(texts, **kw)
    assert np.array_equal(first, again)
