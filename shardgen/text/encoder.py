"""The frozen CLIP text tower: one loader and one encoder, used by `shardgen build` (caption embeddings in the
shards) and by `models.evaluate` (on-the-fly queries for qualitative retrieval). It lives here, not in `models`,
so that imports point one way: models → loaders → shardgen.format, and models.evaluate → shardgen.text.encoder.

Loading fails fast and says what to do when the hub is unreachable, and refuses the 2-token placeholder tokenizer
that some transformers versions return offline instead of raising. Encoding is exact and fast: identical captions
are encoded once, captions are sorted by token length and each batch is padded only to its longest member. CLIP
pools at the EOS token under a causal mask, so this equals padding everything to 77 tokens.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
from pathlib import Path

import torch
from torch import nn

from ..config import DEFAULT_TEXT_ENCODER
from ..errors import EncoderLoadError
from ..format.storage import reachable

CLIP_VOCAB_SIZE = 49408
CONTEXT_LENGTH = 77
RANDOM_INIT_MARKER = "shardgen_encoder.json"  # written by `shardgen init-encoder`


def _hub_reachable(timeout: float = 3.0) -> bool:
    return reachable(os.environ.get("HF_ENDPOINT", "https://huggingface.co"), timeout=timeout)


def _offline_message(name: str) -> str:
    return (f"text encoder {name!r} is not in the local Hugging Face cache and the hub is unreachable: "
            "run once with network access to cache it, or pass --text-encoder PATH to a local HF-format directory "
            "(for offline tests: `shardgen init-encoder DIR`)")


@contextlib.contextmanager
def quiet_transformers(progress: bool = False):
    """Silence transformers' warnings (and, unless `progress`, its per-file progress bars) inside the block."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    if not progress:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _from_pretrained(name: str, local_only: bool):
    from transformers import AutoTokenizer, CLIPTextModelWithProjection

    with quiet_transformers(progress=not local_only):  # keep download bars, drop "Loading weights" noise
        tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=local_only)
        model = CLIPTextModelWithProjection.from_pretrained(name, local_files_only=local_only)
    return tokenizer, model


def load_clip_text(name_or_path: str = DEFAULT_TEXT_ENCODER):
    """Load (tokenizer, CLIPTextModelWithProjection, random_init) from a local dir or a hub id, failing fast."""
    path = Path(name_or_path).expanduser()
    is_local = path.is_dir()
    if not is_local and (name_or_path.startswith((".", "/", "~")) or path.exists()):
        raise EncoderLoadError(f"text encoder path {name_or_path!r} is not a directory")
    if is_local and not (path / "config.json").is_file():
        raise EncoderLoadError(f"text encoder folder {name_or_path!r} holds no config.json, so it is not a Hugging "
                               "Face model folder: pass one written by save_pretrained or `shardgen init-encoder`, "
                               f"or a hub id such as {DEFAULT_TEXT_ENCODER}")
    if is_local and not ((path / "tokenizer.json").is_file() or (path / "vocab.json").is_file()):
        raise EncoderLoadError(f"text encoder folder {name_or_path!r} holds no tokenizer (tokenizer.json, or "
                               "vocab.json + merges.txt): save the tokenizer into it too (tokenizer.save_pretrained)")
    try:
        if is_local:
            tokenizer, model = _from_pretrained(str(path), local_only=True)
        else:
            try:
                tokenizer, model = _from_pretrained(name_or_path, local_only=True)
            except OSError:
                if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false") or not _hub_reachable():
                    raise EncoderLoadError(_offline_message(name_or_path)) from None
                tokenizer, model = _from_pretrained(name_or_path, local_only=False)
    except EncoderLoadError:
        raise
    except pickle.UnpicklingError:  # torch.load(weights_only=True) refused it: nothing ran, and nothing should
        raise EncoderLoadError(f"text encoder {name_or_path!r}: its weights file holds pickled objects other than "
                               "tensors (it could run code); refusing it: use a model folder with model.safetensors"
                               ) from None
    except (OSError, ValueError) as exc:
        detail = " ".join(str(exc).split())  # transformers' messages span lines; keep all of it on one
        raise EncoderLoadError(f"cannot load text encoder {name_or_path!r}: {detail[:400]}") from exc
    if len(tokenizer) != CLIP_VOCAB_SIZE:
        hint = _offline_message(name_or_path) if not is_local else "its tokenizer files are incomplete"
        raise EncoderLoadError(f"text encoder {name_or_path!r}: tokenizer has {len(tokenizer)} tokens, "
                               f"expected {CLIP_VOCAB_SIZE} ({hint})")
    random_init = False
    if is_local and (path / RANDOM_INIT_MARKER).is_file():
        random_init = bool(json.loads((path / RANDOM_INIT_MARKER).read_text()).get("random_init", False))
    return tokenizer, model, random_init


class TextEncoder(nn.Module):
    """Frozen CLIP text tower + tokenizer. `encode(texts)` → L2-normalized float32 `[N, 512]`."""

    def __init__(self, name_or_path: str = DEFAULT_TEXT_ENCODER, *, device: str | torch.device = "cpu") -> None:
        super().__init__()
        tokenizer, model, random_init = load_clip_text(name_or_path)
        self.name = str(name_or_path)
        self.random_init = random_init
        self.tokenizer = tokenizer
        self.model = model.eval().requires_grad_(False).to(device)
        self.embed_dim = int(model.config.projection_dim)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def train(self, mode: bool = True) -> TextEncoder:  # frozen: always eval (no dropout), whatever the parent does
        return super().train(False)

    def tokenize(self, texts: list[str]) -> tuple[list[list[int]], list[int]]:
        """Token ids per text, truncated like HF (keep 76 tokens + EOS); also returns the truncated indices."""
        with quiet_transformers():  # silence "sequence longer than 77": we truncate below
            ids = self.tokenizer(list(texts), truncation=False)["input_ids"]
        truncated = []
        for i, seq in enumerate(ids):
            if len(seq) > CONTEXT_LENGTH:
                ids[i] = seq[: CONTEXT_LENGTH - 1] + seq[-1:]
                truncated.append(i)
        return ids, truncated

    @torch.inference_mode()
    def encode_ids(self, ids: list[list[int]], *, batch_size: int = 256, progress: bool = False) -> torch.Tensor:
        """Encode pre-tokenized texts; sorted by length, each batch padded to its longest. Returns `[N, D]` fp32."""
        from tqdm.auto import tqdm

        device = self.device
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        out = torch.empty(len(ids), self.embed_dim, dtype=torch.float32)
        autocast = (torch.autocast("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
                    if device.type == "cuda" else contextlib.nullcontext())
        bar = tqdm(total=len(ids), desc="encode captions", unit="cap", disable=not progress)
        for idx, input_ids, mask in padded_batches(ids, batch_size=batch_size, pad_id=pad_id):
            with autocast:
                emb = self.model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).text_embeds
            emb = torch.nn.functional.normalize(emb.float(), dim=-1)  # [b, D]
            out[torch.tensor(idx)] = emb.cpu()
            bar.update(len(idx))
        bar.close()
        return out

    def encode(self, texts: list[str], *, batch_size: int = 256, progress: bool = False) -> torch.Tensor:
        """Encode texts (duplicates encoded once). Returns L2-normalized float32 `[N, D]` on the CPU."""
        unique = list(dict.fromkeys(texts))
        ids, _ = self.tokenize(unique)
        emb = self.encode_ids(ids, batch_size=batch_size, progress=progress)  # [U, D]
        row = {t: i for i, t in enumerate(unique)}
        return emb[torch.tensor([row[t] for t in texts], dtype=torch.long)] if texts else emb

    def forward(self, texts: list[str]) -> torch.Tensor:
        return self.encode(texts).to(self.device)


def padded_batches(ids: list[list[int]], *, batch_size: int, pad_id: int):
    """(indices, input_ids [b, L], attention_mask [b, L]) batches of `ids`, longest first (an out-of-memory shows
    at once), each padded to its longest: the encoder's batching, which the encoding benchmarks reuse."""
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]), reverse=True)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        width = len(ids[idx[0]])
        input_ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            input_ids[row, : len(ids[i])] = torch.tensor(ids[i])
            mask[row, : len(ids[i])] = 1
        yield idx, input_ids, mask
