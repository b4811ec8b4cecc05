"""Atomic writes that follow no link (`shardgen.format.atomic`), and the one translation of the operating
system's refusals (`errors.USER_ERRNOS`, `report`)."""

import errno
import os

import pytest

from shardgen.format import USER_ERRNOS, open_append, write_bytes_atomic, write_text_atomic
from shardgen.format.atomic import link_atomic, save_torch_atomic
from shardgen.format.errors import HANDLED, UserError, report


def test_a_link_planted_at_the_old_fixed_temporary_name_is_not_followed(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    run = tmp_path / "run"
    run.mkdir()
    (run / "params.json.tmp").symlink_to(outside)  # what a planted link at the old fixed name looked like
    (run / ".params.json.tmp").symlink_to(outside)
    write_text_atomic(run / "params.json", "{}\n")
    assert outside.read_text() == "keep me" and (run / "params.json").read_text() == "{}\n"


def test_a_link_at_the_destination_is_replaced_not_written_through(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    (tmp_path / "run").mkdir()
    dest = tmp_path / "run" / "eval.json"
    dest.symlink_to(outside)
    write_bytes_atomic(dest, b"new")
    assert outside.read_text() == "keep me" and not dest.is_symlink() and dest.read_bytes() == b"new"
    link_atomic(dest, tmp_path / "run" / "latest")
    assert (tmp_path / "run" / "latest").read_bytes() == b"new"


def test_a_log_that_is_a_link_is_refused(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    (tmp_path / "train.log").symlink_to(outside)
    with pytest.raises(UserError, match="train.log: is a link; refusing to write through it"):
        open_append(tmp_path / "train.log")
    assert outside.read_text() == "keep me"


def test_a_failed_write_names_the_file_and_leaves_nothing(tmp_path, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as info:
        write_text_atomic(tmp_path / "params.json", "{}")
    assert info.value.filename == str(tmp_path / "params.json")
    assert list(tmp_path.iterdir()) == []


def test_torch_archives_stage_in_a_folder_of_their_own(tmp_path):
    torch = pytest.importorskip("torch")
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "run").mkdir()
    # the old staging name was predictable (`.<name>.<pid>.tmp`): a link there put the archive outside
    (tmp_path / "run" / f".latest.pt.{os.getpid()}.tmp").symlink_to(outside)
    save_torch_atomic({"x": torch.zeros(2)}, tmp_path / "run" / "latest.pt")
    assert list(outside.iterdir()) == [] and (tmp_path / "run" / "latest.pt").is_file()


@pytest.mark.parametrize("code", sorted(USER_ERRNOS))
def test_a_refused_write_is_one_line_and_exit_2(code, capsys):
    exc = OSError(code, os.strerror(code), "/run/params.json")
    assert isinstance(exc, HANDLED)
    assert report("train", exc) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"train: error: /run/params.json: {os.strerror(code)}; ")


def test_another_os_error_is_a_bug_with_its_traceback(capsys):
    with pytest.raises(OSError):
        try:
            raise OSError(errno.EBADF, "Bad file descriptor")
        except HANDLED as exc:
            report("train", exc)
    assert capsys.readouterr().err == ""


def test_export_writes_no_fixed_name_through_a_link(tmp_path, train_shards):
    from shardgen.publish.export import export_clip_benchmark

    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    out = tmp_path / "bench"
    (out / "test").mkdir(parents=True)
    for name in ("dataset_type.txt", "test/nshards.txt", "test/0.tar"):
        (out / name).symlink_to(outside)
    assert export_clip_benchmark(str(train_shards), out, samples_per_shard=100)["n_shards"] == 1
    assert outside.read_text() == "keep me" and (out / "test" / "nshards.txt").read_text() == "1\n"
    assert not (out / "test" / "0.tar").is_symlink()
