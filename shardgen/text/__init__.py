"""Caption encoding: the frozen CLIP text tower (`encoder`), the caption embedding cache a build writes once
(`cache`) and the random-initialized encoder for offline runs (`random_init`). Importing this package loads
nothing heavy; its modules load torch and transformers."""
