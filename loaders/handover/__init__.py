"""Hand-over, the last stage: the epoch run and its batches handed to the caller. `epoch` (one producer's epoch:
plan → read → shape, in order), `slots` (batch memory shared with workers), `workers` (the worker pool),
`stream` (`ShardStream`, the IterableDataset), `loader` (`make_loader` and the `ShardLoader` façade), with the
façade's `progress` (counters, state dict, resume) and `lifecycle` (starting, stopping and pinning the workers'
batches), and `device` (to the GPU, normalized). Imports the stages before it."""
