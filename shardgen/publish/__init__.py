"""Publishing a finished shard folder: `verify` (recount and checksum against the manifest), `show` (a picture
and statistics), `upload` (to any fsspec URL, resumably) and `export` (DALI indexes, CLIP_benchmark layout).
A new publishing target goes here."""
