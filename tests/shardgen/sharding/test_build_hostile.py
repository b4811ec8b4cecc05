"""`shardgen build` against hostile inputs and faults, each crafted here, offline: a second build into the same
folder, a SIGKILLed build with image processes, crafted image headers, abusive annotations, a full disk, a
read-only folder, garbage journals and manifests. Expected: one line and exit 2 (before any encoding where the
input can tell), or a skip counted by reason; never a file read from outside the image folder, never a traceback.
"""

import errno
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from PIL import Image

import shardgen
import shardgen.text.encoder
from shardgen.sharding.pipeline import JOURNAL_NAME, BuildConfig, build_shards
from shardgen.cli.main import main
from shardgen.sharding.outdir import LOCK_NAME

from ...helpers import digests, one_line, read_all

REPO = Path(shardgen.__file__).parents[1]


def build_argv(coco: Path, out: Path, encoder: Path, *extra: str, split: str = "val") -> list[str]:
    return ["build", "--coco-root", str(coco), "--split", split, "--out", str(out), "--text-encoder", str(encoder),
            "--samples-per-shard", "5", "--workers", "1", "--quiet", *extra]



@pytest.fixture
def no_encoding(monkeypatch):
    """Fail the test if the text encoder is loaded (refusals must come before the minutes of encoding)."""
    monkeypatch.setattr(shardgen.text.encoder.TextEncoder, "__init__", lambda *a, **k: pytest.fail("encoder was loaded"))


@pytest.fixture(scope="module")
def val_ref(tmp_path_factory, sample_coco, tiny_encoder) -> Path:
    out = tmp_path_factory.mktemp("ref") / "val"
    assert main(build_argv(sample_coco, out, tiny_encoder)) == 0
    return out


def _copy_coco(sample_coco: Path, dest: Path) -> tuple[Path, dict]:
    shutil.copytree(sample_coco / "annotations", dest / "annotations")
    shutil.copytree(sample_coco / "val2014", dest / "val2014")
    return dest, json.loads((dest / "annotations" / "captions_val2014.json").read_text())


def _save(root: Path, ann: dict) -> None:
    (root / "annotations" / "captions_val2014.json").write_text(json.dumps(ann))


# -- 13.3: two builds into one folder --------------------------------------------------------------------------
def test_second_build_into_a_locked_folder_is_refused_naming_the_holder(tmp_path, sample_coco, tiny_encoder,
                                                                         capsys, monkeypatch):
    out = tmp_path / "out"
    hold_lock = textwrap.dedent("""
        import sys, time
        from pathlib import Path
        from shardgen.sharding.outdir import locked_out_dir
        with locked_out_dir(Path(sys.argv[1])):
            print("locked", flush=True)
            time.sleep(120)
    """)
    holder = subprocess.Popen([sys.executable, "-c", hold_lock, str(out)], cwd=REPO, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == b"locked\n"
        with monkeypatch.context() as m:
            m.setattr(shardgen.text.encoder.TextEncoder, "__init__", lambda *a, **k: pytest.fail("encoder was loaded"))
            assert main(build_argv(sample_coco, out, tiny_encoder)) == 2
        line = one_line(capsys.readouterr().err)
        assert f"pid {holder.pid}" in line and str(out) in line
    finally:
        holder.kill()  # a killed holder leaves its lock file; the kernel has dropped the lock itself
        holder.wait()
    assert (out / LOCK_NAME).is_file()
    assert main(build_argv(sample_coco, out, tiny_encoder)) == 0
    assert not (out / LOCK_NAME).exists() and not list(out.glob("*.tmp"))


# -- 13.4: SIGKILL of the build must take its image processes with it -------------------------------------------
def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie has exited (nobody may reap it in a container)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_image_processes_die_with_a_killed_build(tmp_path, sample_coco, tiny_encoder):
    slow_images = textwrap.dedent("""
        import sys, time
        import shardgen.sharding.pack as pack
        real = pack.preprocess_image
        def slow(*args, **kwargs):
            time.sleep(0.2)
            return real(*args, **kwargs)
        pack.preprocess_image = slow  # inherited by the forked image processes
        from shardgen.cli.main import main
        sys.exit(main(sys.argv[1:]))
    """)
    argv = build_argv(sample_coco, tmp_path / "out", tiny_encoder, split="train")
    argv[argv.index("--workers") + 1] = "2"
    build = subprocess.Popen([sys.executable, "-c", slow_images, *argv], cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: list[int] = []
    deadline = time.time() + 60
    while time.time() < deadline and build.poll() is None and len(workers) < 2:
        workers = _children(build.pid)
        time.sleep(0.02)
    build.send_signal(signal.SIGKILL)
    build.wait()
    assert len(workers) == 2, "the build ended before its image processes were seen"
    deadline = time.time() + 10
    while time.time() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.1)
    survivors = [p for p in workers if _alive(p)]
    for pid in survivors:  # orphans: do not leave them running when the test fails
        os.kill(pid, signal.SIGKILL)
    assert not survivors


# -- 13.7: what an image header claims is checked before decoding ------------------------------------------------
def _claiming(width: int, height: int) -> bytes:
    """A real 16×16 JPEG (a few hundred bytes) whose frame header claims width×height."""
    import io

    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(buf, "JPEG", quality=50)
    data = bytearray(buf.getvalue())
    sof = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def test_crafted_image_headers_are_counted_not_packed(tmp_path, sample_coco, tiny_encoder):
    root, ann = _copy_coco(sample_coco, tmp_path / "coco")
    files = [im["file_name"] for im in ann["images"]]
    (root / "val2014" / files[0]).write_bytes(_claiming(14000, 14000))  # 196 Mpx in < 1 KB
    (root / "val2014" / files[1]).write_bytes(_claiming(2000, 2000))  # under the pixel limit, far too short
    report = build_shards(BuildConfig(coco_root=root, split="val", out=tmp_path / "out",
                                      text_encoder=str(tiny_encoder), workers=1, progress=False))
    assert report.manifest.failures["too_large"]["files"] == [files[0]]
    assert report.manifest.failures["corrupt_image"]["files"] == [files[1]]
    packed = {s["meta"]["file_name"] for _, s in read_all(tmp_path / "out")}
    assert packed == set(files[2:])


def test_pixel_limit_is_a_build_option(tmp_path, sample_coco, tiny_encoder, capsys):
    out = tmp_path / "out"
    assert main(build_argv(sample_coco, out, tiny_encoder, "--max-image-pixels", "300000")) == 2  # 640×480 each
    assert "every image failed (12 too_large)" in one_line(capsys.readouterr().err)


# -- 13.8: annotation abuse -----------------------------------------------------------------------------------------
def test_abusive_annotations_are_skipped_and_counted(tmp_path, sample_coco, tiny_encoder, capsys):
    root, ann = _copy_coco(sample_coco, tmp_path / "coco")
    images = ann["images"]
    files = [im["file_name"] for im in images]
    outside = tmp_path / "outside.jpg"  # a real image outside the image folder: must never be read
    shutil.copy(root / "val2014" / files[3], outside)
    images[0]["id"], images[1]["id"], images[2]["id"] = "abc", -5, 2**70
    images[3]["file_name"] = "../../outside.jpg"
    images[4]["file_name"] = str(outside)
    del images[5]["file_name"]
    target = images[6]
    junk = [42, None, ["a", "list"], {"a": "dict"}, 4.5, True]
    ann["annotations"] += [{"id": 90000 + i, "image_id": target["id"], "caption": c} for i, c in enumerate(junk)]
    ann["annotations"] += [{"id": 91000, "caption": "no image id"}, {"id": 91001, "image_id": "7", "caption": "x"},
                           "not an object"]
    _save(root, ann)
    assert main(build_argv(root, tmp_path / "out", tiny_encoder)) == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    failures = {reason: entry["count"] for reason, entry in manifest["failures"].items()}
    assert failures["bad_image_id"] == 3 and failures["unsafe_file_name"] == 2 and failures["bad_file_name"] == 1
    assert failures["caption_not_text"] == len(junk) and failures["malformed_annotation"] == 3
    assert manifest["failures"]["unsafe_file_name"]["files"] == ["../../outside.jpg", str(outside)]
    samples = {s["meta"]["file_name"]: s for _, s in read_all(tmp_path / "out")}
    assert set(samples) == set(files[6:])
    captions = samples[target["file_name"]]["meta"]["captions"]
    assert not {"42", "None", "['a', 'list']", "{'a': 'dict'}", "4.5", "True"} & set(captions)
    assert samples[target["file_name"]]["npy"].shape[0] == len(captions)


def test_two_images_with_one_id_are_refused_before_encoding(tmp_path, sample_coco, tiny_encoder, capsys,
                                                            no_encoding):
    root, ann = _copy_coco(sample_coco, tmp_path / "coco")
    ann["images"][1]["id"] = ann["images"][0]["id"]
    _save(root, ann)
    assert main(build_argv(root, tmp_path / "out", tiny_encoder)) == 2
    line = one_line(capsys.readouterr().err)
    assert "captions_val2014.json" in line and f"image id {ann['images'][0]['id']} is given twice" in line
    assert not (tmp_path / "out").exists()


# -- 13.9: full disk, read-only folder, garbage journal or manifest ---------------------------------------------------
def test_full_disk_is_one_line_and_a_rerun_resumes(tmp_path, sample_coco, tiny_encoder, val_ref, capsys,
                                                   monkeypatch):
    out = tmp_path / "out"
    real_fsync, calls = os.fsync, []

    def fsync_on_a_full_disk(fd):
        if ".part.tar" in os.readlink(f"/proc/self/fd/{fd}"):  # a shard (not its .idx, not the journal)
            calls.append(fd)
        if len(calls) == 2:  # the second shard does not fit
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    with monkeypatch.context() as m:
        m.setattr(os, "fsync", fsync_on_a_full_disk)
        assert main(build_argv(sample_coco, out, tiny_encoder)) == 2
    line = one_line(capsys.readouterr().err)
    # the second range's part (its shard task writes it; the driver names it val-000001.tar once written)
    assert "No space left on device" in line and "val-t000001-0.part.tar" in line and "rerun the same command" in line
    assert not list(out.glob("*.tmp")) and not (out / "manifest.json").exists()
    assert main(build_argv(sample_coco, out, tiny_encoder)) == 0
    assert digests(out) == digests(val_ref)


def test_full_disk_while_saving_the_caption_cache_is_one_line(tmp_path, sample_coco, tiny_encoder, capsys,
                                                               monkeypatch):
    """torch's archive writer reports a failed write as a RuntimeError ("unexpected pos"): on a full disk that is
    the user's to fix, one line; with space left it stays a bug's traceback."""
    from shardgen.text import cache as embeddings

    def save_on_a_full_disk(obj, f, *args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

    monkeypatch.setattr(embeddings.torch, "save", save_on_a_full_disk)
    monkeypatch.setattr(embeddings.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(1 << 30, 1 << 30, 100))
    cache = tmp_path / "cache" / "val_text_embeddings.pt"
    assert main(build_argv(sample_coco, tmp_path / "out", tiny_encoder, "--embeddings-cache", str(cache))) == 2
    line = one_line(capsys.readouterr().err)
    assert "No space left on device" in line and "val_text_embeddings.pt" in line and "free some space" in line
    monkeypatch.setattr(embeddings.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(1 << 40, 0, 1 << 40))
    with pytest.raises(RuntimeError, match="unexpected pos"):
        main(build_argv(sample_coco, tmp_path / "out2", tiny_encoder, "--embeddings-cache", str(cache)))


def test_read_only_out_is_refused_before_encoding(tmp_path, sample_coco, tiny_encoder, capsys, monkeypatch,
                                                  no_encoding):
    out = tmp_path / "ro"
    out.mkdir()
    if os.geteuid() == 0:  # root writes through file modes: make the folder refuse the way a read-only mount does
        real_open = os.open

        def read_only_open(path, flags, *args, **kwargs):
            if Path(path).parent == out and flags & os.O_CREAT:
                raise OSError(errno.EROFS, "Read-only file system", str(path))
            return real_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(os, "open", read_only_open)
    else:
        out.chmod(0o555)
    assert main(build_argv(sample_coco, out, tiny_encoder)) == 2
    line = one_line(capsys.readouterr().err)
    assert f"cannot write {out}" in line and "--out" in line


@pytest.mark.parametrize("content", ["", "{garbage", "[]", '{"config_hash": "x", "shards": [{"name": "../x"}]}'])
def test_garbage_journal_is_ignored_with_a_warning(tmp_path, sample_coco, tiny_encoder, val_ref, capsys, content):
    out = tmp_path / "out"
    shutil.copytree(val_ref, out)
    (out / "manifest.json").unlink()
    (out / JOURNAL_NAME).write_text(content)
    assert main(build_argv(sample_coco, out, tiny_encoder)) == 0
    err = capsys.readouterr().err
    assert f"warning: {out / JOURNAL_NAME} is not a readable build journal" in err
    assert digests(out) == digests(val_ref)


def test_a_caption_cache_another_build_holds_is_one_line_naming_it(tmp_path, sample_coco, tiny_encoder, capsys,
                                                                   no_encoding):
    from shardgen.sharding.outdir import locked_cache

    cache = tmp_path / "shared" / "captions.pt"
    with locked_cache(cache):  # as a build of another folder would, naming the same --embeddings-cache
        argv = build_argv(sample_coco, tmp_path / "out", tiny_encoder, "--embeddings-cache", str(cache))
        assert main(argv) == 2
    line = one_line(capsys.readouterr().err)
    assert f"the caption cache {cache} is in use by the build of pid" in line and "--embeddings-cache" in line
    assert not (tmp_path / "shared" / "captions.pt.lock").exists()  # released with its holder


def test_a_journal_of_an_older_identity_is_rebuilt_when_its_settings_match_and_refused_when_not(
        tmp_path, sample_coco, tiny_encoder, val_ref, capsys):
    out = tmp_path / "out"
    shutil.copytree(val_ref, out)
    journal = json.loads((out / JOURNAL_NAME).read_text())
    old = {**journal, "config_hash": "0" * 64, "inputs": {**journal["inputs"], "sha256": "1" * 64}}
    old.pop("identity")  # as a shardgen that hashed a line per record wrote it
    (out / JOURNAL_NAME).write_text(json.dumps(old))
    assert main(build_argv(sample_coco, out, tiny_encoder)) == 0
    assert "written by another shardgen version" in capsys.readouterr().err
    assert digests(out) == digests(val_ref)
    other = {**old, "settings": {**old["settings"], "samples_per_shard": 7}}
    (out / JOURNAL_NAME).write_text(json.dumps(other))
    assert main(build_argv(sample_coco, out, tiny_encoder)) == 2
    assert "samples_per_shard 7 → " in one_line(capsys.readouterr().err)


@pytest.mark.parametrize("content", ["", "{garbage", "[1, 2]", "\udcff"])
def test_garbage_manifest_in_out_is_one_line_naming_it(tmp_path, sample_coco, tiny_encoder, val_ref, capsys,
                                                       content, no_encoding):
    out = tmp_path / "out"
    shutil.copytree(val_ref, out)
    (out / "manifest.json").write_bytes(content.encode("utf-8", "surrogateescape"))
    assert main(build_argv(sample_coco, out, tiny_encoder)) == 2
    line = one_line(capsys.readouterr().err)
    assert f"{out / 'manifest.json'} is not a shardgen manifest; delete it" in line
    (out / "manifest.json").unlink()  # what the message says to do
    assert main(build_argv(sample_coco, out, tiny_encoder)) == 0
    assert digests(out) == digests(val_ref)
