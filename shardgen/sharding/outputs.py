"""Where a build's files go: the output (a local folder, or a URL the shard tasks write to through fsspec) and the
driver's work folder (the lock, the journal, the caption cache: the output itself when it is local, else
`--staging`, by default `.shardgen-staging/<bucket_path>`).

The driver never moves shard bytes: it gives each part a task wrote its final name (a rename; on an object store a
server-side copy), removes the parts a killed run left, and writes the indexes and the manifest, last.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..config import BuildConfig
from ..format.dali_index import index_name
from ..format.storage import with_timeouts


def staging_folder(dest: str) -> Path:
    """The default local work folder of a build whose output is `dest` (a URL): `.shardgen-staging/<bucket_path>`."""
    return Path(".shardgen-staging") / dest.split("://", 1)[1].replace("/", "_")


@dataclass
class Output:
    location: str  # the output folder: a local path or a URL
    work: Path  # local: the lock, the journal, the caption cache (the output itself when it is local)
    remote: bool

    @classmethod
    def of(cls, cfg: BuildConfig) -> Output:
        location = str(cfg.out)
        if "://" in location:  # a URL (file:// too): the tasks write through fsspec
            return cls(location.rstrip("/"), Path(cfg.staging or staging_folder(location)), True)
        return cls(location, Path(location), False)

    def _fs(self):
        import fsspec

        fs, root = fsspec.core.url_to_fs(self.location, **with_timeouts(self.location))
        return fs, root.rstrip("/")

    def finalize(self, part: str, name: str, *, index: bool) -> None:
        """Give the part a task wrote (and its `.idx`) its final name."""
        pairs = [(part, name)] + ([(index_name(part), index_name(name))] if index else [])
        if not self.remote:
            for src, dst in pairs:
                if src == part or (self.work / src).exists():  # no .idx where the writer could not lay one out
                    os.replace(self.work / src, self.work / dst)
            return
        fs, root = self._fs()
        for src, dst in pairs:
            if fs.exists(f"{root}/{src}"):
                fs.mv(f"{root}/{src}", f"{root}/{dst}")

    def remove_unjournaled(self, split: str, kept: set[str]) -> None:
        """Shards, indexes, parts and temporary files past the journal come from a killed run; they are rewritten."""
        if not self.remote:
            found = [p.name for p in [*self.work.glob(f"{split}-*.tar*"), *self.work.glob(f"{split}-*.idx*"),
                                       *self.work.glob(f".{split}-*.tmp")]]  # a killed writer's temporary files
        else:
            fs, root = self._fs()
            found = [p.rsplit("/", 1)[-1] for p in fs.glob(f"{root}/{split}-*")]
        for name in found:
            base = name.replace(".idx", ".tar")
            if base not in kept or name.endswith(".tmp"):
                if self.remote:
                    fs.rm_file(f"{root}/{name}")
                else:
                    (self.work / name).unlink(missing_ok=True)

    def size(self, name: str) -> int | None:
        """The size of the output's file `name`, or None when it is not there."""
        if not self.remote:
            path = self.work / name
            return path.stat().st_size if path.is_file() else None
        fs, root = self._fs()
        try:
            return int(fs.info(f"{root}/{name}")["size"])
        except FileNotFoundError:
            return None

    def write_text(self, name: str, text: str) -> None:
        """An index or the manifest, whole (local: atomically)."""
        if not self.remote:
            from ..format import write_text_atomic

            write_text_atomic(self.work / name, text)
            return
        fs, root = self._fs()
        fs.pipe_file(f"{root}/{name}", text.encode("utf-8"))
