"""How an evaluation reads to a person: the Recall@K table with the chance level beside it, and a note when a
ranking has so few candidates that Recall@K says little (R@K is 100 by construction once K reaches them).

Chance is what ranking at random scores: text→image K/N (one right image among N); image→text the chance that at
least one of an image's c captions (c: the mean captions per image, rounded) is among K drawn from the M captions,
1 - C(M - c, K) / C(M, K).
"""

from __future__ import annotations

import math

KS = (1, 5, 10)
DIRECTIONS = (("text_to_image", "text → image"), ("image_to_text", "image → text"))


def chance_levels(n_images: int, n_captions: int, ks: tuple[int, ...] = KS) -> dict[str, float]:
    """`chance_<direction>_R@<k>` for a ranking of `n_images` images and `n_captions` captions."""
    out = {}
    per_image = max(1, round(n_captions / max(1, n_images)))
    for k in ks:
        out[f"chance_text_to_image_R@{k}"] = min(1.0, k / max(1, n_images))
        miss = math.comb(n_captions - per_image, k) / math.comb(n_captions, k) if k <= n_captions else 0.0
        out[f"chance_image_to_text_R@{k}"] = 1.0 - miss
    return out


def format_table(result: dict) -> str:
    """The Recall@K table (percent), with a chance row per direction when the result carries it."""
    lines = [f"protocol {result['protocol']}: {result['protocol_about']}", "direction        R@1     R@5     R@10"]
    for d, label in DIRECTIONS:
        lines.append(f"{label:<15}" + "".join(f"{100 * result[f'{d}_R@{k}']:6.2f}  " for k in KS))
        if all(f"chance_{d}_R@{k}" in result for k in KS):
            lines.append(f"{'  chance':<15}" + "".join(f"{100 * result[f'chance_{d}_R@{k}']:6.2f}  " for k in KS))
    return "\n".join(lines)


def small_split_note(n_images: int, ks: tuple[int, ...] = KS) -> str | None:
    """A note when a ranking holds ≤ max(K) images: some R@K are 100 whatever the model does."""
    full = [k for k in ks if k >= n_images]
    if not full:
        return None
    return (f"note: each ranking holds only {n_images} images, so text → image R@{'/'.join(map(str, full))} "
            f"{'is' if len(full) == 1 else 'are'} 100 by construction; compare with the chance rows, or evaluate "
            "on more images")


def format_sets_table(rows: list[tuple[str, dict]]) -> str:
    """One row per evaluated set (its name, protocol, images, then R@1/5/10 both ways, percent)."""
    width = max(len("shards"), *(len(name) for name, _ in rows))
    head = (f"{'shards':<{width}}  {'protocol':<12} {'images':>6}  " + "  ".join(
        f"{label.replace(' ', '')} R@{k}" for _, label in DIRECTIONS for k in KS))
    lines = [head]
    for name, result in rows:
        cells = [f"{100 * result[f'{d}_R@{k}']:{len(label.replace(' ', '')) + len(f' R@{k}')}.2f}"
                 for d, label in DIRECTIONS for k in KS]
        lines.append(f"{name:<{width}}  {result['protocol']:<12} {result['n_images']:>6}  " + "  ".join(cells))
    return "\n".join(lines)
