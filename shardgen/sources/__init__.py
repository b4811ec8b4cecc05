"""Where a build's inputs come from: COCO 2014/2017 annotations (`coco`), Karpathy's split files for COCO and
Flickr30k/8k (`karpathy`), image-caption tables (`table`), webdataset tars (`webdataset`), local folders or URLs
(`roots`), the download of COCO onto disk (`download`) and the small synthetic COCO-layout sample (`synthetic`).

Every source reads its input into the same sorted list of `ImageRecord` records; the build is a pure function of
that list and the `BuildConfig`. A new input goes here, as one module that returns that list."""
