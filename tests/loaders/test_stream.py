import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from loaders import DeviceLoader, LoaderError, Normalize, SourceError, make_loader
from loaders.coco_dataset import clip_transform

from ..helpers import read_all, rewrite_member


def test_batch_keys_shapes_dtypes(train_shards):
    loader = make_loader(str(train_shards), batch_size=8)
    batch = next(iter(loader))
    assert batch["image"].shape == (8, 3, 224, 224) and batch["image"].dtype == torch.uint8
    assert batch["text_embedding"].shape == (8, 512) and batch["text_embedding"].dtype == torch.float32
    assert batch["image_id"].dtype == torch.int64 and batch["image_id"].shape == (8,)
    assert len(batch["caption"]) == 8 and all(isinstance(c, str) for c in batch["caption"])
    assert len(loader) == 6  # ceil(48 / 8)


def test_batch_content_matches_shards(train_shards):
    truth = {k: s for k, s in read_all(train_shards)}
    for batch in make_loader(str(train_shards), batch_size=5, caption="random", seed=1):
        for i, key in enumerate(batch["key"]):
            s = truth[key]
            j = s["meta"]["captions"].index(batch["caption"][i])
            assert torch.allclose(batch["text_embedding"][i], torch.from_numpy(s["npy"][j]).float())
            assert batch["image_id"][i] == s["meta"]["image_id"]
            with Image.open(__import__("io").BytesIO(s["jpg"])) as img:
                ref = torch.from_numpy(np.asarray(img)).permute(2, 0, 1)
            assert (batch["image"][i].int() - ref.int()).abs().max() <= 1  # same decoder family, same pixels


def test_all_captions_mode_pads_with_mask(train_shards):
    truth = {k: s for k, s in read_all(train_shards)}
    seen_counts = set()
    for batch in make_loader(str(train_shards), batch_size=16, caption="all", shuffle=False):
        emb, mask = batch["text_embeddings"], batch["caption_mask"]
        assert emb.shape[:2] == mask.shape and emb.shape[2] == 512
        for i, key in enumerate(batch["key"]):
            n = len(truth[key]["meta"]["captions"])
            seen_counts.add(n)
            assert mask[i].sum() == n and batch["captions"][i] == truth[key]["meta"]["captions"]
            assert torch.allclose(emb[i, :n], torch.from_numpy(truth[key]["npy"]).float())
            assert (emb[i, n:] == 0).all()
    assert {6, 7} <= seen_counts


def _keys(loader):
    return [k for b in loader for k in b["key"]]


def test_simulated_ranks_and_workers_cover_each_sample_once(train_shards):
    per_rank, batches = [], []
    for rank in range(2):
        loader = make_loader(str(train_shards), batch_size=4, num_workers=2, rank=rank, world_size=2, seed=5)
        loader.set_epoch(3)
        keys = _keys(loader)
        per_rank.append(keys)
        batches.append(sum(1 for _ in loader))
        assert len(loader) == batches[-1]
    assert batches[0] == batches[1] == 6
    all_keys = per_rank[0] + per_rank[1]
    assert len(all_keys) == 48 and len(set(all_keys)) == 48


def test_reshuffle_per_epoch_and_determinism(train_shards):
    a = make_loader(str(train_shards), batch_size=8, seed=0)
    e0, e1 = _keys(a), _keys(a)  # without set_epoch the epoch advances by itself
    assert sorted(e0) == sorted(e1) and e0 != e1
    b = make_loader(str(train_shards), batch_size=8, seed=0)
    assert _keys(b) == e0
    c = make_loader(str(train_shards), batch_size=8, seed=0)
    c.set_epoch(1)
    assert _keys(c) == e1


def test_shuffle_buffer_fills_to_its_size(train_shards):
    """It starts yielding at a tenth of its size, then reads two samples per sample yielded until it holds
    `shuffle_buffer` samples; every sample comes out once."""
    import numpy as np

    from loaders.plan.shuffle import iter_shuffled

    chunks = list(iter_shuffled(iter([list(range(600)), list(range(600, 1000))]), size=100,
                                rng=np.random.default_rng(0)))
    # 100 held (99 between yields) from the 190th read on, then one out per one in; the rest comes out at the end
    assert [len(c) for c in chunks] == [600 - 99, 400, 99]
    assert sorted(x for c in chunks for x in c) == list(range(1000))
    small = list(iter_shuffled(iter([list(range(50))]), size=100, rng=np.random.default_rng(0)))
    assert len(small[0]) == 1 + (50 - 10) // 2  # the 10th read, then every second one


def test_random_caption_covers_all_captions(train_shards):
    loader = make_loader(str(train_shards), batch_size=16, seed=0)
    chosen: dict[str, set] = {}
    for _ in range(40):
        for b in loader:
            for k, c in zip(b["key"], b["caption"]):
                chosen.setdefault(k, set()).add(c)
    truth = {k: s["meta"]["captions"] for k, s in read_all(train_shards)}
    assert all(chosen[k] == set(truth[k]) for k in truth)  # every caption of every image gets picked


def test_resampled_mode_keeps_epoch_length(train_shards):
    loader = make_loader(str(train_shards), batch_size=8, resampled=True)
    keys = _keys(loader)
    assert len(keys) == 48 and len(set(keys)) < 48  # drawn with replacement


def test_gpu_normalization_equals_torchvision(train_shards):
    batch = next(iter(make_loader(str(train_shards), batch_size=4)))
    ours = DeviceLoader([batch], "cpu")
    out = next(iter(ours))["image"]
    ref = T.Normalize((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))(
        batch["image"].float() / 255)
    assert out.dtype == torch.float32 and torch.allclose(out, ref, atol=1e-5)
    half = Normalize(dtype=torch.bfloat16, channels_last=True)(batch["image"])
    assert half.dtype == torch.bfloat16 and half.is_contiguous(memory_format=torch.channels_last)


def test_loader_plus_device_step_equals_seed_pipeline_on_stored_images(train_shards):
    """The stored 224 JPEG through our path equals torchvision's ToTensor+Normalize of the same decoded image."""
    s = read_all(train_shards)[0][1]
    from io import BytesIO

    img = Image.open(BytesIO(s["jpg"])).convert("RGB")
    ref = clip_transform()(img)
    ours = Normalize()(torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)[None])[0]
    assert torch.allclose(ours, ref, atol=1e-5)


@pytest.mark.parametrize("workers", [0, 2])
def test_gpu_decode_path_falls_back_to_cpu(train_shards, workers):
    batch = next(iter(make_loader(str(train_shards), batch_size=4, decode="gpu", shuffle=False, num_workers=workers)))
    assert "image" not in batch and len(batch["jpeg"]) == 4 and batch["jpeg"][0].dtype == torch.uint8
    ref = next(iter(make_loader(str(train_shards), batch_size=4, shuffle=False, num_workers=workers)))
    assert batch["key"] == ref["key"]
    out = next(iter(DeviceLoader([batch], "cpu")))["image"]
    expected = Normalize()(ref["image"])
    assert (out - expected).abs().max() < 0.1  # libjpeg vs libjpeg-turbo rounding differs by ≤ 1 level


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_device_loader_matches_cpu(train_shards):
    loader = make_loader(str(train_shards), batch_size=8, shuffle=False)
    cpu = [b["image"] for b in DeviceLoader(loader, "cpu")]
    gpu = [b["image"].cpu() for b in DeviceLoader(loader, "cuda")]
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(cpu, gpu))


def _truncate(src, dst, shard="train-000002.tar"):
    shutil.copytree(src, dst)
    p = dst / shard
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def test_truncated_shard_raises_with_url_and_key(tmp_path, train_shards):
    _truncate(train_shards, tmp_path / "t")
    with pytest.raises(LoaderError, match=r"train-000002\.tar: \d{12}"):
        _keys(make_loader(str(tmp_path / "t"), batch_size=8, shuffle=False))


def test_truncated_shard_skip_policy_keeps_batch_count(tmp_path, train_shards, caplog):
    _truncate(train_shards, tmp_path / "t")
    loader = make_loader(str(tmp_path / "t"), batch_size=8, shuffle=False, on_error="skip")
    batches = list(loader)
    assert len(batches) == len(loader) == 6 and sum(len(b["key"]) for b in batches) == 48
    assert "skipped" in caplog.text


def test_pickle_is_never_loaded(tmp_path, train_shards):
    import io

    d = tmp_path / "p"
    shutil.copytree(train_shards, d)
    buf = io.BytesIO()
    np.save(buf, np.array([object()], dtype=object), allow_pickle=True)
    rewrite_member(d / "train-000000.tar", lambda name, data: buf.getvalue() if name.endswith(".npy") else None)
    with pytest.raises(LoaderError, match="bad sample"):
        _keys(make_loader(str(d), batch_size=8, shuffle=False))


def test_manifest_schema_or_dim_mismatch(tmp_path, train_shards):
    d = tmp_path / "m"
    shutil.copytree(train_shards, d)
    m = json.loads((d / "manifest.json").read_text())
    m["schema_version"] = 99
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(SourceError, match="schema_version 99"):
        make_loader(str(d), batch_size=4)
    with pytest.raises(SourceError, match="512-d, the loader expects 768-d"):
        make_loader(str(train_shards), batch_size=4, embed_dim=768)


def test_fewer_shards_than_ranks_times_workers_cover_each_sample_once(train_shards):
    """5 shards (no index: mid-shard starts read through) for 2 ranks × 3 workers."""
    keys = []
    for rank in range(2):
        loader = make_loader(str(train_shards), batch_size=4, num_workers=3, world_size=2, rank=rank)
        keys += [k for batch in loader for k in batch["key"]]
        loader.close()
    assert len(keys) == 48 and len(set(keys)) == 48


def test_brace_pattern_and_url_list(train_shards):
    pattern = str(train_shards / "train-{000000..000004}.tar")
    a = make_loader(pattern, batch_size=8, shuffle=False)
    b = make_loader([str(train_shards / f"train-{i:06d}.tar") for i in range(5)], batch_size=8, shuffle=False)
    assert _keys(a) == _keys(b) and len(_keys(a)) == 48


def test_random_crop_and_flip_on_uint8(sample_shards):
    out = sample_shards("val", image_size=96, crop=False, samples_per_shard=4)
    batch = next(iter(make_loader(str(out), batch_size=4, image_size=96, crop="random", flip=True)))
    assert batch["image"].shape == (4, 3, 96, 96) and batch["image"].dtype == torch.uint8


@pytest.mark.parametrize("threads", [1, 2])
def test_skip_batches_resumes_exactly(train_shards, threads):
    """Skipped batches replay the augmentation draws: the rest is the same keys and pixels, with a random crop
    that really moves (192 of 224 px), decoding inline or on 2 threads (batch n+1 decodes while n is sent)."""
    opts = {"batch_size": 4, "num_workers": 2, "crop": "random", "flip": True, "image_size": 192, "seed": 2,
            "decode_threads": threads}
    full = make_loader(str(train_shards), **opts)
    full.set_epoch(1)
    batches = list(full)
    resumed = make_loader(str(train_shards), **opts)
    resumed.set_epoch(1, skip_batches=5)
    rest = list(resumed)
    assert len(rest) == len(batches) - 5
    for a, b in zip(batches[5:], rest):
        assert a["key"] == b["key"] and torch.equal(a["image"], b["image"])
    center = make_loader(str(train_shards), **{**opts, "crop": "center", "flip": False})
    center.set_epoch(1)
    plain = {k: img for b in center for k, img in zip(b["key"], b["image"])}
    assert sum(not torch.equal(img, plain[k]) for b in rest for k, img in zip(b["key"], b["image"])) > 20
    for loader in (full, resumed, center):
        loader.close()


def test_kept_batches_are_never_overwritten(train_shards):
    """Batch arrays are recycled only when nothing references them: batches (or views) a caller keeps stay intact."""
    loader = make_loader(str(train_shards), batch_size=4, shuffle=False, decode_threads=2)
    kept = list(loader)  # hold every batch of the epoch
    views = [b["image"][0] for b in make_loader(str(train_shards), batch_size=4, shuffle=False)]  # views only
    truth = dict(read_all(train_shards))
    from io import BytesIO

    for batch in kept:
        for key, img in zip(batch["key"], batch["image"]):
            ref = torch.from_numpy(np.asarray(Image.open(BytesIO(truth[key]["jpg"])).convert("RGB")).copy())
            assert (img.permute(1, 2, 0).int() - ref.int()).abs().max() <= 1
    for batch, view in zip(kept, views):
        assert torch.equal(batch["image"][0], view)
    for _ in range(3):  # recycling still happens when batches are dropped
        list(b["key"] for b in loader)
    pool = loader.dataset.memory.pool
    assert len(pool.arrays) <= pool.size


@pytest.mark.parametrize("member", ["jpg", "npy"])
def test_bad_sample_inside_a_good_shard(tmp_path, train_shards, member):
    """An undecodable JPEG or unparseable npy: `raise` names it; `skip` replaces it, pixels matching metadata."""
    from io import BytesIO

    d = tmp_path / "bad"
    shutil.copytree(train_shards, d)
    truth = dict(read_all(train_shards))
    bad_key = list(truth)[3]
    rewrite_member(d / "train-000000.tar", lambda name, data: b"garbage" if name == f"{bad_key}.{member}" else None)
    with pytest.raises(LoaderError, match=bad_key):
        _keys(make_loader(str(d), batch_size=4, shuffle=False))
    loader = make_loader(str(d), batch_size=4, shuffle=False, on_error="skip")
    batches = list(loader)
    assert len(batches) == len(loader) and sum(len(b["key"]) for b in batches) == 48
    for batch in batches:
        assert bad_key not in batch["key"]
        for key, img, emb in zip(batch["key"], batch["image"], batch["text_embedding"]):
            ref = np.asarray(Image.open(BytesIO(truth[key]["jpg"])).convert("RGB"))
            assert (img.permute(1, 2, 0).int() - torch.from_numpy(ref.copy()).int()).abs().max() <= 1
            assert any(torch.allclose(emb, torch.from_numpy(r).float()) for r in truth[key]["npy"])


def _check_against_shards(truth: dict, key: str, image: torch.Tensor, embedding: torch.Tensor | None = None) -> None:
    from io import BytesIO

    ref = np.asarray(Image.open(BytesIO(truth[key]["jpg"])).convert("RGB"))
    assert (image.permute(1, 2, 0).int() - torch.from_numpy(ref.copy()).int()).abs().max() <= 1, key
    if embedding is not None:
        assert any(torch.allclose(embedding, torch.from_numpy(r).float()) for r in truth[key]["npy"]), key


def test_worker_batches_in_shared_slots_are_never_overwritten(train_shards):
    """With workers, pixels and embeddings travel in reused shared-memory slots (5 per worker here). A slot is
    reused only when the caller holds no tensor or view of it: a kept image view, a kept embedding view and kept
    batches (more than there are slots: the fallback path too) all stay intact while later epochs reuse slots."""
    truth = dict(read_all(train_shards))
    loader = make_loader(str(train_shards), batch_size=4, num_workers=2, prefetch_factor=1, seed=4)
    batches = list(loader)  # epoch 0; then only a view of one image of the first batch is kept
    image_view = (batches[0]["key"][1], batches[0]["image"][1])
    del batches
    batches = list(loader)  # epoch 1; only an embedding view of the second batch (the other worker's) is kept
    emb_view = (batches[1]["key"][2], batches[1]["caption"][2], batches[1]["text_embedding"][2])
    del batches
    for _ in range(2):  # epochs 2-3: batches dropped at once, so their slots are reused
        for b in loader:
            _check_against_shards(truth, b["key"][0], b["image"][0], b["text_embedding"][0])
    kept = list(loader)  # epoch 4: 6 batches per worker held at once
    for batch in kept:
        for key, img, emb in zip(batch["key"], batch["image"], batch["text_embedding"]):
            _check_against_shards(truth, key, img, emb)
    _check_against_shards(truth, *image_view)
    key, caption, emb = emb_view
    assert torch.allclose(emb, torch.from_numpy(truth[key]["npy"][truth[key]["meta"]["captions"].index(caption)]).float())
    ring = loader._workers.ring
    del kept, image_view, emb_view, emb, batch, img, b
    ring.release_unused()
    assert (ring.state.numpy() != -1).all()  # nothing is held any more: every slot can be reused


def test_persistent_workers_follow_set_epoch(train_shards):
    """Workers live across epochs; the epoch (and resume position) set in the main process reaches them."""
    ref = make_loader(str(train_shards), batch_size=4, num_workers=2, seed=9, persistent_workers=False)
    loader = make_loader(str(train_shards), batch_size=4, num_workers=2, seed=9)
    for epoch in (0, 3, 1):
        ref.set_epoch(epoch)
        loader.set_epoch(epoch)
        assert _keys(loader) == _keys(ref)
    loader.set_epoch(3, skip_batches=2)
    ref.set_epoch(3)
    assert _keys(loader) == _keys(ref)[8:]


def test_worker_batches_are_pinned_on_a_thread(train_shards, monkeypatch):
    """With pin_memory, worker batches are converted and pinned on a background thread, in order; errors reach
    the caller; stopping early stops the thread. (Pinning itself needs CUDA; here it is an identity.)"""
    import threading

    import loaders.handover.lifecycle as stream

    threads = []
    monkeypatch.setattr(stream, "pinned", lambda b: threads.append(threading.current_thread().name) or b)
    plain = make_loader(str(train_shards), batch_size=4, num_workers=2, seed=3, pin_memory=False)
    pinned = make_loader(str(train_shards), batch_size=4, num_workers=2, seed=3, pin_memory=True)
    assert _keys(pinned) == _keys(plain) and set(threads) == {"shardloader-pin"}
    for batch in pinned:  # stop early: the thread goes away, the next epoch still works
        break
    del batch
    pinned.set_epoch(5)
    plain.set_epoch(5)
    assert _keys(pinned) == _keys(plain)
    assert not any(t.name == "shardloader-pin" for t in threading.enumerate())

    def broken(items):
        yield next(items)
        raise LoaderError("boom")

    with pytest.raises(LoaderError, match="boom"):
        list(stream.in_background(broken(iter(range(3))), depth=2))


def test_workers_without_shared_slots_still_work(train_shards, monkeypatch, caplog):
    """If the slots cannot be allocated (a small /dev/shm), workers fall back to one segment per batch."""
    import loaders.handover.lifecycle as stream

    def no_shm(*args, **kwargs):
        raise RuntimeError("unable to write to file </torch_1>: No space left on device")

    monkeypatch.setattr(stream, "SlotRing", no_shm)
    truth = dict(read_all(train_shards))
    loader = make_loader(str(train_shards), batch_size=4, num_workers=2, seed=1)
    batches = list(loader)
    assert loader._workers.ring is None and "no shared-memory batch slots" in caplog.text
    assert sum(len(b["key"]) for b in batches) == 48
    for b in batches:
        _check_against_shards(truth, b["key"][0], b["image"][0], b["text_embedding"][0])


def test_the_facade_says_what_a_trainer_needs(train_shards):
    """`models` reads the data's facts off the façade, not off its ShardStream: the shards, the image size, the
    decoder, and how many batches the next pass yields (fewer after a mid-epoch resume)."""
    from loaders.shape.decode import available_backends

    loader = make_loader(str(train_shards), batch_size=4, seed=2, image_size=96)
    assert (loader.shards.n_samples, len(loader.shards.urls), loader.image_size) == (48, 5, 96)
    assert loader.backend == available_backends()[0] and loader.batches_in_pass == len(loader) == 12
    loader.set_epoch(1)
    it = iter(loader)
    for _ in range(5):
        next(it)
    state = loader.state_dict()
    again = make_loader(str(train_shards), batch_size=6, seed=2, image_size=96)
    again.load_state_dict(state)
    assert again.batches_in_pass == (48 - 20) // 6 + 1 and len(list(again)) == again.batches_in_pass
