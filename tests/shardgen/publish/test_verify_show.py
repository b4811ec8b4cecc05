import shutil

from PIL import Image

from shardgen.cli.main import main
from shardgen.publish.verify import verify

from ...helpers import read_all, rewrite_member


def test_verify_clean(train_shards, capsys):
    assert main(["verify", str(train_shards), "--quiet"]) == 0
    assert "48 samples" in capsys.readouterr().out


def test_verify_catches_truncated_shard(tmp_path, train_shards, capsys):
    d = tmp_path / "t"
    shutil.copytree(train_shards, d)
    shard = d / "train-000001.tar"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2 + 100])
    assert main(["verify", str(d), "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "train-000001.tar" in out and "sha256" in out and "truncated" in out


def test_verify_catches_edited_sample(tmp_path, train_shards):
    d = tmp_path / "e"
    shutil.copytree(train_shards, d)
    first = read_all(d)[0][0]
    rewrite_member(d / "train-000000.tar",
                   lambda name, data: b"a caption that does not belong here" if name == f"{first}.txt" else None)
    report = verify(str(d))
    assert not report.ok
    assert any("txt is not the first caption" in p for p in report.problems)
    assert any("sha256" in p for p in report.problems)


def test_verify_missing_manifest(tmp_path):
    report = verify(str(tmp_path))
    assert not report.ok and "manifest.json" in report.problems[0]


def test_show_writes_grid_and_stats(tmp_path, train_shards, capsys):
    png = tmp_path / "grid.png"
    assert main(["show", str(train_shards), "--out", str(png), "--n", "6", "--columns", "3"]) == 0
    out = capsys.readouterr().out
    assert "images 48" in out and "5: " in out and "7: " in out
    with Image.open(png) as img:
        assert img.size[0] == 3 * (224 + 8) + 8 and img.size[1] > 2 * 224
        # caption text is drawn: the strip under the first image is not blank white
        strip = img.convert("L").crop((8, 8 + 224 + 2, 8 + 224, 8 + 224 + 40))
        assert strip.getextrema()[0] < 100


def test_verify_prints_names_from_the_shards_with_control_characters_escaped(tmp_path, train_shards, capsys):
    """A member named with an ESC sequence (clear the screen, fake a summary line) is printed escaped."""
    import io
    import tarfile

    d = tmp_path / "esc"
    shutil.copytree(train_shards, d)
    shard = d / "train-000000.tar"
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar]
    with tarfile.open(shard, "w", format=tarfile.USTAR_FORMAT) as tar:
        for i, (m, data) in enumerate(members):
            if i == 0:
                m.name = "\x1b[2J\x1b[H" + m.name
            tar.addfile(m, io.BytesIO(data))
    assert main(["verify", str(d), "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\\x1b[2J\\x1b[H" in out, out
