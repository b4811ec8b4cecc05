"""Shaping, the third stage: records into a batch. `augment` (the `Augment` contract and its registry: crop,
flip, size), `decode` (JPEG bytes into the batch's pixels, on the CPU) and `batches` (collate, decode
scheduling, numpy fields into tensors). Imports only the stages before it."""
