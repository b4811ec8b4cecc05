"""Planning, the first stage: what an epoch reads, decided before a byte is read. `sources` (a source resolved
to its `ShardSet`: manifests, URLs, sample counts), `seeds` (the random streams one seed feeds), `shuffle` (the
shuffle buffer's order), `ranks` (which samples of which shards each rank and worker reads), `mixing` (several
sets in one epoch) and `resume` (a state dict read back, and the rest of its epoch planned). Pure functions of
the config and the manifests: testable with lists, no torch."""
