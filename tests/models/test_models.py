import time

import pytest
import torch
import torch.nn.functional as F

import models.nets.image_encoder as ie
from models import (
    CLIPModel,
    ImageEncoder,
    ProjectionHead,
    TextEncoder,
    WeightsUnavailable,
    info_nce_loss,
    parameter_counts,
    recall_at_k,
)


def test_shapes_and_parameter_counts():
    model = CLIPModel(ImageEncoder("resnet50", pretrained=False))
    out = model(torch.randn(2, 3, 224, 224))
    assert out.shape == (2, 512) and torch.allclose(out.norm(dim=-1), torch.ones(2), atol=1e-5)
    trunk = parameter_counts(model.image_encoder)["trainable"]
    head = parameter_counts(model.head)["trainable"]
    assert 23.4e6 < trunk < 23.6e6  # ResNet50 without fc
    assert head == 2048 * 1024 + 1024 + 1024 * 512 + 512  # ~2.6 M
    assert isinstance(model.head[1], torch.nn.GELU)
    assert torch.isclose(model.scale(), torch.tensor(1 / 0.07), rtol=1e-5)
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    assert model.scale().item() == 100.0  # clamped


def test_offline_imagenet_weights_fail_fast(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(ie, "reachable", lambda url, timeout=3.0: False)
    t0 = time.perf_counter()
    with pytest.raises(WeightsUnavailable, match="--no-pretrained"):
        ImageEncoder("resnet50")
    assert time.perf_counter() - t0 < 5


def test_local_weights_file(tmp_path):
    import torchvision

    state = torchvision.models.resnet18().state_dict()
    torch.save(state, tmp_path / "w.pth")
    enc = ImageEncoder("resnet18", pretrained=True, weights_path=str(tmp_path / "w.pth"))
    assert torch.equal(enc.trunk.conv1.weight, state["conv1.weight"])


def _reference_loss(img, txt, scale):
    """Independent symmetric CE: explicit log-softmax and diagonal picks."""
    logits = scale * img @ txt.T
    n = logits.shape[0]
    li = -torch.stack([F.log_softmax(logits[i], 0)[i] for i in range(n)]).mean()
    lt = -torch.stack([F.log_softmax(logits[:, i], 0)[i] for i in range(n)]).mean()
    return (li + lt) / 2


def test_info_nce_matches_reference_open_clip_and_is_symmetric():
    from open_clip.loss import ClipLoss

    torch.manual_seed(0)
    img = F.normalize(torch.randn(8, 512), dim=-1)
    txt = F.normalize(torch.randn(8, 512), dim=-1)
    scale = torch.tensor(14.3)
    ours = info_nce_loss(img, txt, scale)
    assert torch.allclose(ours, _reference_loss(img, txt, scale), atol=1e-6)
    assert torch.allclose(ours, ClipLoss()(img, txt, scale), atol=1e-6)
    assert torch.allclose(ours, info_nce_loss(txt, img, scale), atol=1e-6)
    assert info_nce_loss(img, img, scale) < ours  # matched pairs score better


def _brute_force(image_emb, text_emb, owner, ks):
    sims = text_emb @ image_emb.T
    out = {}
    for k in ks:
        t2i = [owner[t].item() in sims[t].argsort(descending=True)[:k].tolist() for t in range(len(owner))]
        i2t = []
        for i in range(image_emb.shape[0]):
            top = (image_emb[i] @ text_emb.T).argsort(descending=True)[:k].tolist()
            i2t.append(any(owner[t].item() == i for t in top))
        out[f"text_to_image_R@{k}"] = sum(t2i) / len(t2i)
        out[f"image_to_text_R@{k}"] = sum(i2t) / len(i2t)
    return out


def test_recall_at_k_matches_brute_force_with_6_and_7_captions():
    torch.manual_seed(1)
    n_caps = [5, 6, 7, 5, 5, 7, 6, 5, 5, 5, 6, 5]
    owner = torch.tensor([i for i, n in enumerate(n_caps) for _ in range(n)])
    image_emb = F.normalize(torch.randn(len(n_caps), 16), dim=-1)
    text_emb = F.normalize(image_emb[owner] + 0.9 * torch.randn(len(owner), 16), dim=-1)
    ks = (1, 5, 10)
    got = recall_at_k(image_emb, text_emb, owner, ks, chunk=7)  # small chunks exercise the chunking
    want = _brute_force(image_emb, text_emb, owner, ks)
    assert got == pytest.approx(want)
    assert 0 < got["text_to_image_R@1"] < 1  # a non-trivial case


def test_frozen_text_tower_unchanged_by_a_training_step(tiny_encoder):
    text = TextEncoder(str(tiny_encoder))
    before = {k: v.clone() for k, v in text.model.state_dict().items()}
    model = CLIPModel(ImageEncoder("resnet18", pretrained=False), ProjectionHead(512))
    opt = torch.optim.AdamW(list(model.parameters()) + list(text.parameters()), lr=1e-2)
    txt = text.encode(["a red circle", "a blue square"])
    loss = info_nce_loss(model(torch.randn(2, 3, 64, 64)), txt, model.scale())
    loss.backward()
    opt.step()
    assert all(p.grad is None for p in text.parameters())
    assert all(torch.equal(before[k], v) for k, v in text.model.state_dict().items())
    assert parameter_counts(text)["trainable"] == 0
