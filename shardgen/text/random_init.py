"""`shardgen init-encoder`: write a random-initialized CLIP text model with the real CLIP BPE tokenizer.

Offline machines (CI, air-gapped clusters) cannot download `openai/clip-vit-base-patch32`, but tests, the demo
and benchmarks must go through exactly the loading path users run. So we build the same architecture from
`CLIPTextConfig`, derive HF `vocab.json`/`merges.txt` from the BPE file that `open_clip_torch` ships (the same
file OpenAI's CLIP uses), and `save_pretrained` both. A marker file records that the weights are random, and
`shardgen build` copies that flag into the manifest: such embeddings are not semantically meaningful.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from shardgen.text.encoder import CLIP_VOCAB_SIZE, CONTEXT_LENGTH, RANDOM_INIT_MARKER, quiet_transformers

from ..errors import UserError
from ..format.names import EMBED_DIM

MAX_PROJECTION_DIM = 1 << 14  # CLIP towers project to 512 (ViT-B), 768 (ViT-L), 1024 (ViT-H)

SIZES = {
    # The ViT-B/32 text tower (what openai/clip-vit-base-patch32 uses).
    "full": dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8),
    # Small enough for unit tests on a CPU in milliseconds.
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2),
}


def find_bpe_vocab() -> Path:
    """Locate `bpe_simple_vocab_16e6.txt.gz` inside the installed open_clip_torch package."""
    try:
        import open_clip
    except ImportError as exc:
        raise UserError("init-encoder needs the CLIP BPE vocabulary: `pip install open_clip_torch` "
                        "or pass --bpe-vocab FILE (bpe_simple_vocab_16e6.txt.gz)") from exc
    path = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    if not path.is_file():
        raise UserError(f"open_clip_torch is installed but {path.name} is missing; pass --bpe-vocab FILE")
    return path


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte → printable-unicode table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def write_tokenizer_files(bpe_gz: Path, out_dir: Path) -> tuple[Path, Path]:
    """Derive HF `vocab.json` + `merges.txt` (49408 tokens) from CLIP's BPE merge list."""
    lines = gzip.open(bpe_gz, "rt", encoding="utf-8").read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    byte_chars = list(_bytes_to_unicode().values())
    vocab = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    if len(vocab) != CLIP_VOCAB_SIZE:
        raise UserError(f"{bpe_gz}: derived {len(vocab)} tokens, expected {CLIP_VOCAB_SIZE}; not CLIP's BPE file?")
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab_file, merges_file = out_dir / "vocab.json", out_dir / "merges.txt"
    vocab_file.write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}, ensure_ascii=False), encoding="utf-8")
    merges_file.write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n", encoding="utf-8")
    return vocab_file, merges_file


def init_encoder(out_dir: str | Path, *, size: str = "full", seed: int = 0, bpe_vocab: str | Path | None = None,
                 projection_dim: int = EMBED_DIM) -> Path:
    """Write a random-init CLIP text model + real tokenizer to `out_dir` in HF format; returns the path.
    `projection_dim`: the width of its embeddings (512 as ViT-B CLIP's towers; 768 as ViT-L/14's)."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizer

    if size not in SIZES:
        raise UserError(f"--size must be one of {', '.join(SIZES)}, got {size!r}")
    if type(projection_dim) is not int or not 1 <= projection_dim <= MAX_PROJECTION_DIM:
        raise UserError(f"--projection-dim must be a whole number in 1..{MAX_PROJECTION_DIM}, got {projection_dim!r}")
    out = Path(out_dir)
    vocab_file, merges_file = write_tokenizer_files(Path(bpe_vocab) if bpe_vocab else find_bpe_vocab(), out)
    # from_pretrained reads vocab.json/merges.txt in every transformers version (constructor arguments differ).
    tokenizer = CLIPTokenizer.from_pretrained(out, model_max_length=CONTEXT_LENGTH)
    if len(tokenizer) != CLIP_VOCAB_SIZE:
        raise UserError(f"tokenizer built from {vocab_file} has {len(tokenizer)} tokens, expected {CLIP_VOCAB_SIZE}")
    tokenizer.save_pretrained(out)
    config = CLIPTextConfig(vocab_size=CLIP_VOCAB_SIZE, max_position_embeddings=CONTEXT_LENGTH,
                            projection_dim=projection_dim,
                            hidden_act="quick_gelu", bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
                            **SIZES[size])
    torch.manual_seed(seed)
    model = CLIPTextModelWithProjection(config).eval()
    with quiet_transformers():
        model.save_pretrained(out)
    (out / RANDOM_INIT_MARKER).write_text(json.dumps({"random_init": True, "size": size, "seed": seed,
                                                      "projection_dim": projection_dim}) + "\n")
    return out
