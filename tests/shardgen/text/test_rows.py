"""The caption cache's files a build reads instead of the `.pt`: each caption's row in listing order, read
memory-mapped; a warm rebuild of the same listing unpickles nothing, any other listing is matched through the
`.pt` once and gets its own order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import shardgen.text.cache as cache_module
import shardgen.text.rows as rows_module
from shardgen.sources.record import ImageRecord
from shardgen.sources.listing import Listing
from shardgen.text.cache import CaptionEmbeddings, encode_captions, listing_files


def _listing(captions: list[tuple[str, ...]]) -> Listing:
    return Listing.from_records(ImageRecord(i, f"{i}.jpg", Path(f"/img/{i}.jpg"), caps)
                                for i, caps in enumerate(captions))


def test_rows_gather_each_captions_row_in_listing_order():
    table = np.arange(8, dtype=np.float16).reshape(4, 2)
    emb = CaptionEmbeddings("x", False, table, np.array([3, 1, 0, 1, 3], np.int64), np.zeros(0, np.int64))
    assert np.array_equal(emb.rows(1, 4), table[[1, 0, 1]])
    assert emb.width == 2


def test_warm_rebuild_reads_no_pickle_and_gives_the_same_rows(tmp_path, tiny_encoder, monkeypatch):
    listing = _listing([("a red circle", "a dog"), ("a dog",), ("sky at night", "a red circle", "grass")])
    cache = tmp_path / "c.pt"
    cold, written = encode_captions(listing, text_encoder=str(tiny_encoder), cache=cache)
    assert written and len(cold.table) == 4  # unique texts
    assert cold.order.tolist() == [0, 1, 1, 2, 0, 3]

    def no_pickle(*args, **kw):
        raise AssertionError("a warm rebuild of the same listing loaded the .pt")

    monkeypatch.setattr(cache_module, "load_embeddings_cache", no_pickle)
    monkeypatch.setattr(cache_module, "encode_resumable", no_pickle)
    warm, written = encode_captions(listing, text_encoder=str(tiny_encoder), cache=cache)
    assert not written and isinstance(warm.order, np.memmap) and isinstance(warm.table, np.memmap)
    assert np.array_equal(warm.rows(0, 6), cold.rows(0, 6))


def test_another_listing_is_matched_through_the_pt_once(tmp_path, tiny_encoder, monkeypatch):
    full = _listing([("a red circle", "a dog"), ("a dog",), ("sky at night",)])
    cache = tmp_path / "c.pt"
    first, _ = encode_captions(full, text_encoder=str(tiny_encoder), cache=cache)
    part = full[1:3]  # `--limit`-like: another listing, every text already in the cache
    monkeypatch.setattr(cache_module, "encode_resumable", lambda *a, **k: (_ for _ in ()).throw(AssertionError()))
    got, written = encode_captions(part, text_encoder=str(tiny_encoder), cache=cache)
    assert not written and got.order.tolist() == [1, 2]
    assert np.array_equal(got.rows(0, 2), first.rows(2, 4))
    listing_files(tmp_path, cache, part.captions_digest()).order.write_bytes(b"torn")  # made again, not trusted
    again, _ = encode_captions(part, text_encoder=str(tiny_encoder), cache=cache)
    assert np.array_equal(again.rows(0, 2), first.rows(2, 4))


def test_truncated_captions_are_kept_by_index(tmp_path, tiny_encoder):
    long = " ".join(["word"] * 120)
    listing = _listing([("short",), (long, "short")])
    emb, _ = encode_captions(listing, text_encoder=str(tiny_encoder), cache=tmp_path / "c.pt")
    assert emb.truncated.tolist() == [1]
    again, _ = encode_captions(listing, text_encoder=str(tiny_encoder), cache=tmp_path / "c.pt")
    assert again.truncated.tolist() == [1]


def test_a_cold_cache_writes_its_rows_as_encoded_and_new_texts_join_a_warm_one(tmp_path, tiny_encoder):
    first = _listing([("a red circle", "a dog"), ("sky at night",)])
    cache = tmp_path / "c.pt"
    encode_captions(first, text_encoder=str(tiny_encoder), cache=cache)
    assert not list(tmp_path.glob("*.partial*")) and (tmp_path / "c.pt.rows.npy").is_file()
    grown = _listing([("a dog", "green grass"), ("a red circle",), ("sky at night", "a blue square")])
    got, written = encode_captions(grown, text_encoder=str(tiny_encoder), cache=cache)
    fresh, _ = encode_captions(grown, text_encoder=str(tiny_encoder), cache=tmp_path / "fresh.pt")
    assert written and got.order.tolist() == list(range(5))  # the .pt now holds this listing's texts, in order
    assert np.allclose(got.rows(0, 5).astype(np.float32), fresh.rows(0, 5).astype(np.float32), atol=2e-3)


@pytest.mark.slow
def test_a_key_never_vouches_for_rows_another_encoder_wrote(tmp_path, tiny_encoder, monkeypatch):
    """Encoder A warm; encoder B's cold encoding replaces the rows and is killed before writing its own key: a
    rebuild with A must not take B's rows for A's (the key names the rows file it was made for)."""
    import shutil

    other = tmp_path / "other-encoder"
    shutil.copytree(tiny_encoder, other)
    (other / "config.json").write_text((other / "config.json").read_text() + " ")  # another fingerprint
    listing = _listing([("a red circle", "a dog"), ("sky at night",)])
    cache = tmp_path / "c.pt"
    a, _ = encode_captions(listing, text_encoder=str(tiny_encoder), cache=cache)
    want = np.array(a.rows(0, 3))

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(rows_module, "save_order", killed)
    with pytest.raises(KeyboardInterrupt):
        encode_captions(listing, text_encoder=str(other), cache=cache)
    monkeypatch.undo()
    again, written = encode_captions(listing, text_encoder=str(tiny_encoder), cache=cache)
    assert written  # A's rows were gone: encoded again, not B's taken
    assert np.array_equal(again.rows(0, 3), want)


def test_a_read_only_cache_folder_keeps_a_new_listings_order_in_the_builds_folder(tmp_path, tiny_encoder,
                                                                                    monkeypatch):
    import errno

    shared, scratch = tmp_path / "shared", tmp_path / "build"
    shared.mkdir(), scratch.mkdir()
    full = _listing([("a red circle", "a dog"), ("sky at night",)])
    encode_captions(full, text_encoder=str(tiny_encoder), cache=shared / "c.pt")
    before = sorted(p.name for p in shared.iterdir())
    real = rows_module.save_rows

    def read_only(path, rows):  # a team's cache on a read-only mount (root ignores a folder's mode)
        if Path(path).parent == shared:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        real(path, rows)

    monkeypatch.setattr(rows_module, "save_rows", read_only)
    got, written = encode_captions(full[1:2], text_encoder=str(tiny_encoder), cache=shared / "c.pt", scratch=scratch)
    assert not written and sorted(p.name for p in shared.iterdir()) == before
    assert got.order_file.parent == scratch and got.order.tolist() == [2]
    again, _ = encode_captions(full[1:2], text_encoder=str(tiny_encoder), cache=shared / "c.pt", scratch=scratch)
    assert again.order_file == got.order_file  # found there next time


def test_a_full_disk_while_a_cold_cache_grows_is_an_oserror_not_a_sigbus(tmp_path, tiny_encoder, monkeypatch):
    import errno
    import os

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(OSError) as caught:
        encode_captions(_listing([("a dog",)]), text_encoder=str(tiny_encoder), cache=tmp_path / "c.pt")
    assert caught.value.errno == errno.ENOSPC


def test_a_relative_cache_path_moves_its_rows_into_place(tmp_path, tiny_encoder, monkeypatch):
    monkeypatch.chdir(tmp_path)
    encode_captions(_listing([("a dog",), ("sky",)]), text_encoder=str(tiny_encoder), cache=Path("rel") / "c.pt")
    assert (tmp_path / "rel" / "c.pt.rows.npy").is_file() and not list((tmp_path / "rel").glob("*.partial*"))


def test_a_fifo_or_folder_where_a_cache_file_goes_is_never_read_and_a_folder_is_one_line(tmp_path, tiny_encoder):
    import os

    from shardgen.errors import UserError

    listing = _listing([("a dog",), ("sky",)])
    cache = tmp_path / "c.pt"
    first, _ = encode_captions(listing, text_encoder=str(tiny_encoder), cache=cache)
    files = listing_files(tmp_path, cache, listing.captions_digest())
    files.key.unlink()
    os.mkfifo(files.key)  # read, it would hang the build
    again, _ = encode_captions(listing, text_encoder=str(tiny_encoder), cache=cache)
    assert np.array_equal(again.rows(0, 2), first.rows(0, 2)) and files.key.is_file()
    files.order.unlink()
    files.order.mkdir()
    with pytest.raises(UserError, match="a folder where the caption cache keeps a file"):
        encode_captions(listing, text_encoder=str(tiny_encoder), cache=cache)


def test_a_pt_copied_over_the_cache_is_not_paired_with_the_old_rows_file(tmp_path, tiny_encoder):
    """The `.pt` is the cache users keep and copy; copied over another cache's (or rewritten by a version that
    writes no rows file), its rows file of the same shape is the old texts' rows and must not be trusted."""
    import shutil

    first = _listing([("a red circle",), ("a dog",), ("grass",)])
    other = _listing([("sky at night",), ("a cat",), ("water",)])
    cache, elsewhere = tmp_path / "c.pt", tmp_path / "other" / "c.pt"
    encode_captions(first, text_encoder=str(tiny_encoder), cache=cache)
    expected, _ = encode_captions(other, text_encoder=str(tiny_encoder), cache=elsewhere)
    shutil.copy(elsewhere, cache)  # the .pt alone: the rows file beside it is still the first listing's
    got, _ = encode_captions(other, text_encoder=str(tiny_encoder), cache=cache)
    assert np.array_equal(np.array(got.rows(0, 3)), np.array(expected.rows(0, 3)))


@pytest.mark.slow
@pytest.mark.parametrize("damage", [
    lambda data: data.__setitem__("embeddings", data["embeddings"].flatten()),
    lambda data: data.__setitem__("embeddings", data["embeddings"][:1]),
    lambda data: data.__setitem__("truncated", 5),
    lambda data: data.__setitem__("texts", {"a dog": 0}),
], ids=["1-d-embeddings", "fewer-rows-than-texts", "truncated-not-a-list", "texts-not-a-list"])
def test_a_pt_whose_parts_do_not_fit_together_is_encoded_again(tmp_path, tiny_encoder, damage):
    import torch

    bigger = _listing([("a red circle",), ("a dog",), ("grass",)])
    cold, _ = encode_captions(bigger, text_encoder=str(tiny_encoder), cache=tmp_path / "cold.pt")
    expected = np.array(cold.rows(0, 3))
    cache = tmp_path / "c.pt"
    encode_captions(_listing([("a red circle",), ("a dog",)]), text_encoder=str(tiny_encoder), cache=cache)
    data = torch.load(cache, weights_only=True)
    damage(data)
    torch.save(data, cache)
    for side in tmp_path.glob("c.pt.*"):  # the .pt alone, as a cache from before the plain files
        side.unlink()
    got, _ = encode_captions(bigger, text_encoder=str(tiny_encoder), cache=cache)
    assert np.array_equal(np.array(got.rows(0, 3)), expected)  # every caption encoded again, as a cold build does
