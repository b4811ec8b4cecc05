import numpy as np
import torch

from shardgen.text.cache import CaptionEmbeddings


def test_a_shard_tasks_rows_from_one_gather_equal_each_records_rows():
    table = np.arange(8, dtype=np.float16).reshape(4, 2)
    emb = CaptionEmbeddings("x", False, ["a", "b", "c"], table, {"a": 3, "b": 0, "c": 1}, [])
    lists = [("a", "c"), ("b",), ("c", "a", "b")]
    got = emb.rows_for_each(lists)
    assert [g.shape for g in got] == [(2, 2), (1, 2), (3, 2)]
    assert all(np.array_equal(g, emb.rows_for(c)) for g, c in zip(got, lists))
    assert np.array_equal(got[0], table[[3, 1]])
    assert [list(i) for i in emb.indices_for_each(lists)] == [[3, 1], [0], [1, 3, 0]]
    assert torch.equal(emb.embeddings, torch.from_numpy(table[[3, 0, 1]]))  # texts order
