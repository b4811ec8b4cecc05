import numpy as np
import torch

from shardgen.text.cache import CaptionEmbeddings


def test_a_shard_tasks_rows_from_one_gather_equal_each_records_rows():
    emb = CaptionEmbeddings("x", False, ["a", "b", "c"], torch.arange(6, dtype=torch.float16).reshape(3, 2), [])
    lists = [("a", "c"), ("b",), ("c", "a", "b")]
    got = emb.rows_for_each(lists)
    assert [g.shape for g in got] == [(2, 2), (1, 2), (3, 2)]
    assert all(np.array_equal(g, emb.rows_for(c)) for g, c in zip(got, lists))
