"""Building: the pipeline that runs a build (`pipeline`), the packing stages (`pack`: records → preprocessed
samples → shard batches), image preprocessing (`images`), shard writing (`writer`), the resume journal
(`journal`), the output folder's checks and lock (`outdir`) and the closing step that writes the indexes and the
manifest last (`finish`). A new build step goes here, as a stage the pipeline calls."""
