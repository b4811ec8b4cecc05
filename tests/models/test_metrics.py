"""Recall@K in chunks: the same ranks as one whole similarity matrix, ties counted against the query, and the
1k protocol's mean over folds, checked on a case worked out by hand."""

import pytest
import torch
import torch.nn.functional as F

from models.nets.metrics import recall_at_k, recall_at_k_folds, retrieval_ranks


def _sorted_ranks(image_emb, text_emb, owner):
    """Reference: sort every query's candidates by score, a wrong candidate before a right one on a tie."""
    sims = (image_emb @ text_emb.T).tolist()  # [N][M]
    t2i = []
    for j, o in enumerate(owner.tolist()):
        order = sorted(range(len(sims)), key=lambda i: (-sims[i][j], i == o))
        t2i.append(order.index(o))
    i2t = []
    for i, row in enumerate(sims):
        order = sorted(range(len(row)), key=lambda j: (-row[j], owner[j] == i))
        i2t.append(next(pos for pos, j in enumerate(order) if owner[j] == i))
    return torch.tensor(i2t), torch.tensor(t2i)


def _integer_set(seed: int, n_images: int = 23):
    """Small-integer embeddings: every score is exact whatever the summation order, and ties are frequent
    (duplicated images and captions make more)."""
    g = torch.Generator().manual_seed(seed)
    image_emb = torch.randint(-2, 3, (n_images, 6), generator=g).float()
    image_emb[5] = image_emb[2]  # a duplicated image
    owner = torch.tensor([i for i in range(n_images) for _ in range(5 + i % 3)])
    text_emb = image_emb[owner] + torch.randint(-1, 2, (len(owner), 6), generator=g).float()
    text_emb[7] = text_emb[30]  # one caption text given to two images
    return image_emb, text_emb, owner


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_chunked_ranks_equal_one_whole_matrix_and_a_sort_with_ties(seed):
    image_emb, text_emb, owner = _integer_set(seed)
    whole = retrieval_ranks(image_emb, text_emb, owner, chunk=len(image_emb))
    want = _sorted_ranks(image_emb, text_emb, owner)
    assert torch.equal(whole[0], want[0]) and torch.equal(whole[1], want[1])
    for chunk in (1, 4, 7):
        got = retrieval_ranks(image_emb, text_emb, owner, chunk=chunk)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    by_budget = retrieval_ranks(image_emb, text_emb, owner, max_elements=3 * len(owner))  # 3 images a chunk
    assert torch.equal(by_budget[0], want[0]) and torch.equal(by_budget[1], want[1])
    assert (want[1] > 0).any() and (want[1] == 0).any()  # a case with hits and misses


def test_chunked_recall_equals_unchunked_on_random_embeddings():
    torch.manual_seed(3)
    owner = torch.tensor([i for i in range(40) for _ in range(5 + (i % 7 == 3))])
    image_emb = F.normalize(torch.randn(40, 32), dim=-1)
    text_emb = F.normalize(image_emb[owner] + 0.8 * torch.randn(len(owner), 32), dim=-1)
    whole = recall_at_k(image_emb, text_emb, owner, (1, 5, 10), chunk=40)
    assert recall_at_k(image_emb, text_emb, owner, (1, 5, 10), chunk=6) == whole
    assert recall_at_k(image_emb, text_emb, owner, (1, 5, 10), max_elements=500) == whole
    assert 0 < whole["text_to_image_R@1"] < whole["text_to_image_R@10"] < 1


def test_a_tie_counts_against_the_query():
    image_emb = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # two identical images
    text_emb = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # one caption each, identical
    got = recall_at_k(image_emb, text_emb, torch.tensor([0, 1]), (1, 2))
    assert got == {"text_to_image_R@1": 0.0, "text_to_image_R@2": 1.0,
                   "image_to_text_R@1": 0.0, "image_to_text_R@2": 1.0}


def test_1k_protocol_is_the_mean_over_folds_worked_by_hand():
    # fold 0: images x, y; caption 0 (of x) = x, caption 1 (of y) = x: caption 1 finds x first (a t2i miss), and
    # each image has a wrong caption tying with its best one (two i2t misses at R@1, hits at R@2).
    # fold 1: images x, y again; captions x (of image 2), y, y (of image 3): every query right at R@1.
    x, y = [1.0, 0.0], [0.0, 1.0]
    image_emb = torch.tensor([x, y, x, y])
    text_emb = torch.tensor([x, x, x, y, y])
    owner = torch.tensor([0, 1, 2, 3, 3])
    mean, folds = recall_at_k_folds(image_emb, text_emb, owner, n_images=4, n_folds=2, ks=(1, 2))
    assert folds == [{"text_to_image_R@1": 0.5, "text_to_image_R@2": 1.0,
                      "image_to_text_R@1": 0.0, "image_to_text_R@2": 1.0},
                     {"text_to_image_R@1": 1.0, "text_to_image_R@2": 1.0,
                      "image_to_text_R@1": 1.0, "image_to_text_R@2": 1.0}]
    assert mean == {"text_to_image_R@1": 0.75, "text_to_image_R@2": 1.0,
                    "image_to_text_R@1": 0.5, "image_to_text_R@2": 1.0}
    # over all 4 images at once, images 2 and 3 duplicate 0 and 1: every caption ties with a wrong image
    assert recall_at_k(image_emb, text_emb, owner, (1, 2))["text_to_image_R@1"] == 0.0
    one_fold, _ = recall_at_k_folds(image_emb, text_emb, owner, n_images=2, n_folds=1, ks=(1, 2))
    assert one_fold == folds[0]  # the "5k" shape: the first n images with their captions


def test_folds_that_do_not_fit_are_refused():
    emb = torch.eye(3)
    with pytest.raises(ValueError, match="multiple of the fold count"):
        recall_at_k_folds(emb, emb, torch.arange(3), n_images=3, n_folds=2)
    with pytest.raises(ValueError, match="at most the 3 images"):
        recall_at_k_folds(emb, emb, torch.arange(3), n_images=4, n_folds=1)
