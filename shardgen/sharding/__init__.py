"""Sharding: the pipeline that runs a build (`pipeline`), the input made ready for tasks (`inputs`), the shard
task that writes one planned range's shard(s) (`shardtask`) from the packing stages (`pack`) and image
preprocessing (`images`) through the writer (`writer`), the executors that run tasks (`executors/`: inline,
local processes, Ray), the cluster check (`probe`), the output and the driver's work folder (`outputs`, `outdir`:
checks and lock), the resume journal (`journal`) and the closing step that writes the indexes and the manifest
last (`finish`). A new build step goes here, as a stage the pipeline calls; a new executor is one module in
`executors/`."""
