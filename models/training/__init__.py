"""Training machinery, independent of where batches come from: `step` (one optimizer step, `TrainState`,
precision), `schedule` (the learning rate), `checkpoint` (written atomically, read back checked),
`distributed` (the process group, rank agreement), `stop` (stop signals between steps) and `synthetic`
(device-made batches for `--synthetic`). Imports the nets, never the loaders."""
