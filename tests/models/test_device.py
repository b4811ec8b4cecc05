"""`--device auto` prefers CUDA, then Apple's MPS, then the CPU (the MPS path is guarded and untested: no Mac here)."""

from __future__ import annotations

import types

import pytest
import torch

from models.training.distributed import auto_device, mps_available, setup_distributed


@pytest.mark.parametrize("cuda, mps, want", [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")])
def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, want):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert auto_device() == want
    if not cuda:  # the training set-up (no torchrun: nothing initialized) picks the same device
        assert setup_distributed("auto").device == torch.device(want)


def test_a_torch_without_the_mps_backend_says_no(monkeypatch):
    monkeypatch.setattr(torch, "backends", types.SimpleNamespace())
    assert mps_available() is False
