"""`make gpu-check` on a machine without CUDA: every part that does not need CUDA runs at toy sizes on the CPU,
through the same functions the GPU run uses, and the table and results file come out."""

from __future__ import annotations

import json

import pytest
import torch


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU path; on a GPU machine `make gpu-check` runs it all")
def test_gpu_check_runs_its_cpu_path_at_toy_size(tmp_path, capsys):
    from benchmarks.gpu_check import main

    results = tmp_path / "gpu.json"
    assert main(["--work", str(tmp_path / "work"), "--results", str(results), "--budget-s", "600"]) == 0
    out, err = capsys.readouterr()
    assert "no GPU found" in err
    data = json.loads(results.read_text())
    status = {name: part["status"] for name, part in data["parts"].items()}
    assert status == {"data": "ok", "p6-synthetic": "ok", "p6-cpu-decode": "ok", "p6-gpu-decode": "ok",
                      "tests": "skipped", "decode": "ok", "captions": "ok", "compile": "skipped"}, data["parts"]
    p6 = {name: data["parts"][name]["result"] for name in ("p6-synthetic", "p6-cpu-decode", "p6-gpu-decode")}
    assert all(r["steps_per_s"] > 0 and 0 <= r["data_wait"] <= 1 and r["precision"] == "fp32" for r in p6.values())
    assert p6["p6-synthetic"]["options"] == ["--synthetic"] and p6["p6-synthetic"]["steps_measured"] == 2
    decode = data["parts"]["decode"]["result"]
    assert decode["n_images"] == 24 and decode["device_img_per_s"] > 0 and decode["cpu_core_img_per_s"] > 0
    captions = data["parts"]["captions"]["result"]["rows"]
    assert captions["fp32"]["max_abs_diff_vs_fp32"] == 0 and 0 < captions["bf16"]["max_abs_diff_vs_fp32"] < 0.1
    assert "P6 --synthetic (ceiling) [fp32]" in out and "captions: tiny text tower, bf16" in out


def test_steady_rate_weights_windows_by_time_and_leaves_out_the_warm_up():
    from benchmarks.gpu_check import steady_rate

    records = [{"step": 10, "samples_per_s": 1.0, "data_wait": 0.9},  # warm-up window: left out
               {"step": 20, "samples_per_s": 20.0, "data_wait": 0.0},  # 10 steps × 2 samples in 1 s
               {"step": 30, "samples_per_s": 10.0, "data_wait": 0.5}]  # the same in 2 s
    rate = steady_rate(records, warm=10, batch=2)
    assert rate["steps_measured"] == 20 and rate["steps_per_s"] == pytest.approx(20 / 3)
    assert rate["data_wait"] == pytest.approx(1 / 3)  # 0 s of 1 and 1 s of 2
    with pytest.raises(RuntimeError, match="no logged window"):
        steady_rate(records[:1], warm=10, batch=2)
