"""The scale rehearsal's own arithmetic and probes (the timings themselves are `make scale`'s business)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch


def test_split_counts_keep_coco_proportion():
    from benchmarks.scale import COCO_TRAIN, COCO_VAL, split_counts

    assert split_counts(COCO_TRAIN + COCO_VAL) == (COCO_TRAIN, COCO_VAL)
    assert split_counts(2000) == (1343, 657) and split_counts(2) == (1, 1)


def test_projection_scales_measured_costs():
    from benchmarks.scale import GPU_CAPTIONS_PER_S, projection

    rows = [{"stage": "build", "ms_per_item": 10.0}, {"stage": "verify", "ms_per_item": 1.0},
            {"stage": "encode-full", "ms_per_item": 8.0}]
    here, many, gpu = projection(rows, cpus=2)
    assert here["build_images_h"] == pytest.approx(123_287 * 0.010 / 3600)
    assert here["encode_captions_h"] == pytest.approx(616_767 * 0.008 / 3600)
    assert many["build_images_h"] == pytest.approx(here["build_images_h"] * 2 / 16)
    assert gpu["encode_captions_h"] == pytest.approx(616_767 / GPU_CAPTIONS_PER_S / 3600)
    assert gpu["total_h"] == pytest.approx(gpu["encode_captions_h"] + gpu["build_images_h"] + gpu["verify_h"])


@pytest.mark.skipif(not os.path.isfile("/proc/self/smaps_rollup"), reason="reads /proc (Linux)")
def test_peak_memory_counts_child_processes():
    from benchmarks.scale import PeakMemory

    code = "import subprocess, sys; subprocess.run([sys.executable, '-c', 'b = bytearray(300_000_000); " \
           "import time; time.sleep(1.5)'])"
    proc = subprocess.Popen([sys.executable, "-c", code])
    peak = PeakMemory(proc.pid, every=0.05)
    peak.start()
    proc.wait()
    time.sleep(0.1)
    assert peak.stop()["rss"] > 300  # MB: the grandchild's buffer is in the parent's tree total


def test_encode_options_batching_equals_encoder(tiny_encoder):
    """Every non-baseline option runs through this loop; it must batch exactly as `encode_ids` does."""
    from benchmarks.encode_options import encode_sorted
    from shardgen.text.encoder import TextEncoder

    enc = TextEncoder(str(tiny_encoder))
    ids, _ = enc.tokenize([f"a {'red ' * (i % 7)}circle number {i}" for i in range(40)])

    def forward(input_ids, mask):
        return enc.model(input_ids=input_ids, attention_mask=mask).text_embeds

    with torch.inference_mode():
        ours = encode_sorted(forward, ids, batch_size=8, pad_id=enc.tokenizer.pad_token_id)
    assert torch.equal(ours, enc.encode_ids(ids, batch_size=8))
