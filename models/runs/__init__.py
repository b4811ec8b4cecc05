"""What a training or evaluation run checks, prints and writes, for the two commands `models.train` and
`models.evaluate`: `preflight` (checks before the first step, data warnings), `metrics_log` (the run's records,
data wait), `curves` (training curves), `report` (the Recall@K table), `plots` and `qualitative` (retrieval
pictures), and the parts of the two commands that open shards (`shards`). The only folder, beside the two
commands, that imports the loaders."""
