import time

import pytest
import torch

import shardgen.text.encoder as text
from shardgen.text.encoder import CONTEXT_LENGTH, EncoderLoadError, TextEncoder


@pytest.fixture(scope="module")
def encoder(tiny_encoder):
    return TextEncoder(str(tiny_encoder))


def test_real_clip_bpe_tokenizer(encoder):
    assert len(encoder.tokenizer) == 49408
    # the ids OpenAI's CLIP tokenizer gives for this text
    assert encoder.tokenizer("a photo of a cat")["input_ids"] == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert encoder.random_init is True


def _pad_to_77(encoder, texts):
    """The seed's way: every caption padded to 77 tokens."""
    batch = encoder.tokenizer(texts, padding="max_length", max_length=CONTEXT_LENGTH, truncation=True,
                              return_tensors="pt")
    with torch.no_grad():
        emb = encoder.model(**batch).text_embeds
    return torch.nn.functional.normalize(emb, dim=-1)


def test_dynamic_padding_equals_padding_to_77(encoder):
    texts = ["a dog", "a very small red triangle on a gray background next to a large green circle",
             "two shapes", "a dog", "x " * 100]
    fast = encoder.encode(texts, batch_size=2)
    slow = _pad_to_77(encoder, texts)
    assert fast.shape == (5, 512) and fast.dtype == torch.float32
    assert (fast - slow).abs().max().item() <= 1e-5
    assert torch.equal(fast[0], fast[3])  # duplicates are encoded once
    assert torch.allclose(fast.norm(dim=-1), torch.ones(5), atol=1e-5)


def test_long_captions_truncated_like_hf(encoder):
    ids, cut = encoder.tokenize(["short", "word " * 200])
    assert cut == [1]
    assert len(ids[1]) == CONTEXT_LENGTH and ids[1][-1] == 49407 and ids[1][0] == 49406


def test_frozen(encoder):
    assert not any(p.requires_grad for p in encoder.parameters())
    encoder.train()
    assert not encoder.model.training


def test_offline_hub_id_fails_fast_with_advice(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(EncoderLoadError, match="--text-encoder PATH"):
        TextEncoder("openai/clip-vit-base-patch32")
    assert time.perf_counter() - t0 < 10  # not ~23 s of retries


def test_unreachable_hub_fails_fast_without_offline_flag(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(text, "_hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(EncoderLoadError, match="hub is unreachable"):
        TextEncoder("openai/clip-vit-base-patch32")


def test_placeholder_tokenizer_is_refused(monkeypatch, tiny_encoder):
    real = text._from_pretrained

    class Placeholder:
        def __len__(self):
            return 2

    monkeypatch.setattr(text, "_from_pretrained", lambda name, local_only: (Placeholder(), real(name, local_only)[1]))
    with pytest.raises(EncoderLoadError, match="2 tokens, expected 49408"):
        TextEncoder(str(tiny_encoder))


def test_missing_local_path(tmp_path):
    with pytest.raises(EncoderLoadError, match="not a directory"):
        TextEncoder(str(tmp_path / "nope"))


def test_a_pickled_weights_file_is_refused_in_one_line(tiny_encoder, tmp_path):
    """An encoder folder (named by a manifest, say) whose pytorch_model.bin is a pickle of more than tensors: nothing
    runs (weights_only), and the message does not suggest `weights_only=False` either."""
    import shutil

    folder = tmp_path / "enc"
    shutil.copytree(tiny_encoder, folder)
    (folder / "model.safetensors").unlink()
    torch.save({"x": print}, folder / "pytorch_model.bin")  # a reference to a callable: refused by weights_only
    with pytest.raises(EncoderLoadError, match="pickled objects other than tensors") as info:
        text.load_clip_text(str(folder))
    assert "weights_only" not in str(info.value) and "\n" not in str(info.value)
