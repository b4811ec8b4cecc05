"""Side formats for other tools: the CLIP_benchmark retrieval layout (DALI `.idx` files are written by the build,
`shardgen.sharding.dali`).

- CLIP_benchmark (`--dataset wds/...`) reads `DIR/dataset_type.txt` (`retrieval`), `DIR/<split>/nshards.txt`
  and shards `0.tar … N-1.tar` whose samples hold an image and a `txt` with every caption on its own line.
"""

from __future__ import annotations

from pathlib import Path

import webdataset as wds

from ..format import UserError, iter_checked_samples, load_manifest, open_fresh, write_text_atomic


def export_clip_benchmark(source: str, out_dir: str | Path, *, split: str = "test",
                          samples_per_shard: int = 1000) -> dict:
    """Rewrite a shard set as a CLIP_benchmark retrieval dataset; returns {n_shards, n_samples}.

    Every sample is checked by the format's rules (`format.parse_sample`): the first that breaks one stops the
    export with a `SchemaError` naming its shard and key, before `nshards.txt` is written (so no tool reads a
    partial export). Bad options and an unreadable source raise `UserError`."""
    if samples_per_shard < 1:
        raise UserError(f"samples_per_shard must be at least 1 (got {samples_per_shard})")
    manifest = load_manifest(source)
    split_dir = Path(out_dir) / split
    split_dir.mkdir(parents=True, exist_ok=True)
    n_shards, n_samples, writer, fh = 0, 0, None, None

    def close() -> None:
        if writer is not None:
            writer.close()
            fh.close()

    try:
        for record in iter_checked_samples(source, manifest):
            if n_samples % samples_per_shard == 0:
                close()
                fh = open_fresh(split_dir / f"{n_shards}.tar")  # closed in close(); a link there is not followed
                writer = wds.TarWriter(fh, user="", group="", mtime=0, encoder=False)
                n_shards += 1
            writer.write({"__key__": record.key, "jpg": bytes(record.jpg),
                          "txt": "\n".join(record.captions).encode()})
            n_samples += 1
    finally:
        close()
    write_text_atomic(split_dir / "nshards.txt", f"{n_shards}\n")
    write_text_atomic(Path(out_dir) / "dataset_type.txt", "retrieval\n")
    return {"n_shards": n_shards, "n_samples": n_samples}
