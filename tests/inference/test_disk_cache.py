"""The embedding cache on disk: keys, storage, damage detection, LRU eviction, two processes,
and its use by the predictor (a warm cache skips the encoder and gives the same masks)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_swinlitemedsam.inference import disk_cache
from napari_swinlitemedsam.inference.disk_cache import (
    DiskCacheError,
    DiskEmbeddingCache,
    content_key,
    weights_fingerprint,
)
from napari_swinlitemedsam.inference.generators import run_to_end
from napari_swinlitemedsam.inference.volume import segment_volume
from napari_swinlitemedsam.model.segmenter import ImageFeatures
from napari_swinlitemedsam.model.skip_mask_decoder import SkipContext
from stub_segmenter import CountingSegmenter, stub_predictor


def features(seed: int, skips: bool = False, size: int = 8) -> ImageFeatures:
    generator = torch.Generator().manual_seed(seed)
    embedding = torch.randn(1, 256, size, size, generator=generator)
    context = None
    if skips:
        context = SkipContext(
            torch.randn(1, 4, 2 * size, 2 * size, generator=generator),
            torch.randn(1, 8, size, size, generator=generator),
        )
    return ImageFeatures(embedding, context)


def assert_same_features(left: ImageFeatures, right: ImageFeatures) -> None:
    left, right = left.tensors(), right.tensors()
    assert sorted(left) == sorted(right)
    for name in left:
        assert left[name].dtype == right[name].dtype
        assert torch.equal(left[name], right[name]), name


# ---------------------------------------------------------------- keys and storage


def test_keys_depend_on_pixels_shape_identity_and_storage_dtype():
    image = np.arange(12, dtype=np.uint8).reshape(3, 4)
    key = content_key(image, "model-a", "float16")
    assert key == content_key(image.copy(), "model-a", "float16")
    assert key == content_key(np.asfortranarray(image), "model-a", "float16")
    changed = image.copy()
    changed[0, 0] += 1
    others = [
        content_key(changed, "model-a", "float16"),
        content_key(image.reshape(4, 3), "model-a", "float16"),
        content_key(image, "model-b", "float16"),
        content_key(image, "model-a", "float32"),
    ]
    assert len({key, *others}) == 5


def test_weights_fingerprint_follows_the_weights():
    assert weights_fingerprint(CountingSegmenter(0)) == weights_fingerprint(CountingSegmenter(0))
    assert weights_fingerprint(CountingSegmenter(0)) != weights_fingerprint(CountingSegmenter(1))


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_round_trip_in_the_storage_dtype(tmp_path, dtype):
    cache = DiskEmbeddingCache(tmp_path, dtype=dtype)
    original = features(0, skips=True)
    kept = cache.put("ab" * 32, original)
    loaded = cache.get("ab" * 32)
    assert_same_features(loaded, kept)
    assert loaded.embedding.dtype == getattr(torch, dtype)
    if dtype == "float32":
        assert_same_features(loaded, original)
    else:
        assert torch.allclose(loaded.embedding.float(), original.embedding, rtol=1e-3, atol=1e-4)
    assert cache.get("cd" * 32) is None
    assert (cache.stats.hits, cache.stats.misses, cache.stats.writes) == (1, 1, 1)


def test_values_beyond_float16_are_stored_as_float32(tmp_path):
    cache = DiskEmbeddingCache(tmp_path, dtype="float16")
    big = ImageFeatures(torch.full((1, 256, 2, 2), 1e6))
    assert cache.put("ee" * 32, big).embedding.dtype == torch.float32
    assert torch.equal(cache.get("ee" * 32).embedding, big.embedding)


def test_bad_settings_are_refused(tmp_path):
    with pytest.raises(DiskCacheError, match="dtype"):
        DiskEmbeddingCache(tmp_path, dtype="bfloat16")
    with pytest.raises(DiskCacheError, match="max_bytes"):
        DiskEmbeddingCache(tmp_path, max_bytes=-1)
    (tmp_path / "file").write_text("x")
    with pytest.raises(DiskCacheError, match="folder"):
        DiskEmbeddingCache(tmp_path / "file")


# ---------------------------------------------------------------- damage and vanishing files


def _damage_truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _damage_flip_payload_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the stored tensor bytes (uncompressed)
    path.write_bytes(bytes(data))


def _damage_garbage(path: Path) -> None:
    path.write_bytes(b"\x00" * 100)


@pytest.mark.parametrize("damage", [_damage_truncate, _damage_flip_payload_byte, _damage_garbage])
def test_damaged_entries_are_detected_removed_and_rewritten(tmp_path, damage):
    cache = DiskEmbeddingCache(tmp_path)
    key = "0a" * 32
    cache.put(key, features(1))
    damage(cache.path_for(key))
    assert cache.get(key) is None
    assert cache.stats.corrupt == 1 and not cache.path_for(key).exists()
    kept = cache.put(key, features(1))
    assert_same_features(cache.get(key), kept)


def test_an_entry_under_the_wrong_name_is_not_used(tmp_path):
    cache = DiskEmbeddingCache(tmp_path)
    cache.put("1a" * 32, features(1))
    moved = cache.path_for("2b" * 32)
    moved.parent.mkdir(parents=True, exist_ok=True)
    os.replace(cache.path_for("1a" * 32), moved)
    assert cache.get("2b" * 32) is None and cache.stats.corrupt == 1


def test_a_vanished_entry_is_a_miss(tmp_path):
    cache = DiskEmbeddingCache(tmp_path)
    cache.put("3c" * 32, features(1))
    cache.path_for("3c" * 32).unlink()  # e.g. evicted by another process
    assert cache.get("3c" * 32) is None and cache.stats.corrupt == 0


def test_write_failures_are_counted_not_raised(tmp_path, monkeypatch):
    cache = DiskEmbeddingCache(tmp_path)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(disk_cache, "write_atomically", disk_full)
    kept = cache.put("4d" * 32, features(1))
    assert torch.equal(kept.embedding, features(1).embedding) and cache.stats.write_errors == 1
    assert cache.get("4d" * 32) is None


# ---------------------------------------------------------------- size bound and LRU order


def test_least_recently_used_entries_are_evicted_first(tmp_path):
    probe = DiskEmbeddingCache(tmp_path / "probe")
    probe.put("00" * 32, features(0))
    entry_bytes = probe.nbytes
    cache = DiskEmbeddingCache(tmp_path / "cache", max_bytes=int(3.5 * entry_bytes))
    keys = [f"{i:02x}" * 32 for i in range(1, 5)]
    for index, key in enumerate(keys[:3]):
        cache.put(key, features(index))
        os.utime(cache.path_for(key), (1000 + index, 1000 + index))  # a < b < c in age
    assert cache.get(keys[0]) is not None  # a is used again: now the most recent
    cache.put(keys[3], features(3))
    present = [key in cache for key in keys]
    assert present == [True, False, True, True]  # b, the least recently used, went
    assert cache.nbytes <= 3.5 * entry_bytes and cache.stats.evicted == 1
    cache.clear()
    assert len(cache) == 0


def test_entries_larger_than_the_budget_are_not_stored(tmp_path):
    cache = DiskEmbeddingCache(tmp_path, max_bytes=1000)
    cache.put("5e" * 32, features(0))
    assert len(cache) == 0
    off = DiskEmbeddingCache(tmp_path / "off", max_bytes=0)
    off.put("5e" * 32, features(0))
    assert len(off) == 0


def test_stale_temporary_files_are_cleaned_up_fresh_ones_kept(tmp_path):
    cache = DiskEmbeddingCache(tmp_path)
    cache.put("6f" * 32, features(0))
    folder = cache.path_for("6f" * 32).parent
    stale, fresh = folder / ".x.npz.a1.tmp", folder / ".y.npz.b2.tmp"
    stale.write_bytes(b"killed writer")
    fresh.write_bytes(b"writer at work")
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    cache.evict()
    assert not stale.exists() and fresh.exists() and "6f" * 32 in cache


def test_two_processes_sharing_a_small_cache(tmp_path):
    # Both processes write, read and evict the same few keys in a cache that holds about three
    # of them; every read must give either nothing or exactly the features of that key.
    worker = textwrap.dedent(
        """
        import sys, torch
        from napari_swinlitemedsam.inference.disk_cache import DiskEmbeddingCache
        from napari_swinlitemedsam.model.segmenter import ImageFeatures

        folder, budget, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
        cache = DiskEmbeddingCache(folder, max_bytes=budget, dtype="float16")
        expected = {}
        for k in range(6):
            g = torch.Generator().manual_seed(k)
            expected[f"{k:02x}" * 32] = torch.randn(1, 256, 8, 8, generator=g).half()
        keys = list(expected)
        hits = 0
        for step in range(150):
            key = keys[(step * (seed + 1)) % len(keys)]
            got = cache.get(key)
            if got is None:
                cache.put(key, ImageFeatures(expected[key].float()))
            else:
                assert torch.equal(got.embedding, expected[key]), key
                hits += 1
        print(hits, cache.stats.corrupt)
        """
    )
    entry_bytes = 256 * 8 * 8 * 2 + 400
    commands = [
        [sys.executable, "-c", worker, str(tmp_path), str(3 * entry_bytes), str(seed)]
        for seed in (1, 2)
    ]
    processes = [
        subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for c in commands
    ]
    outputs = [p.communicate(timeout=240) for p in processes]
    for process, (out, err) in zip(processes, outputs):
        assert process.returncode == 0, err
        hits, corrupt = map(int, out.split())
        assert hits > 0 and corrupt == 0
    assert DiskEmbeddingCache(tmp_path).nbytes <= 3 * entry_bytes + 2 * entry_bytes


@pytest.mark.slow
def test_many_processes_writing_the_same_keys_never_read_a_torn_entry(tmp_path):
    # Four processes (the workers of a cluster on a shared folder) start together and read,
    # write and evict the same eight keys in a cache that holds five of them. Every entry any
    # of them reads is complete and holds exactly its key's features; none is found damaged.
    import multiprocessing

    import cache_hammer

    processes_count, rounds = 4, 6
    entry_bytes = sum(t.numel() * 4 for t in cache_hammer.expected_features(0).tensors().values())
    budget = 5 * (entry_bytes + 1000)
    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(processes_count), context.Queue()
    processes = [
        context.Process(
            target=cache_hammer.hammer, args=(str(tmp_path), budget, seed, rounds, start, results)
        )
        for seed in range(processes_count)
    ]
    for process in processes:
        process.start()
    reports = [results.get(timeout=600) for _ in processes]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    for seed, hits, misses, corrupt, wrong in reports:
        assert wrong == 0 and corrupt == 0, f"process {seed} read a torn or foreign entry"
        assert hits + misses == rounds * cache_hammer.KEYS
    assert sum(report[1] for report in reports) > 0  # they did read each other's entries
    # evicted: eight keys cannot all stay in a cache of five, and every round ends with a
    # scan, so some key was missed (and written) again after its first write (how often
    # depends on how the processes interleave)
    assert sum(report[2] for report in reports) > cache_hammer.KEYS
    assert DiskEmbeddingCache(tmp_path).nbytes <= budget
    assert not list(tmp_path.glob("??/.*.tmp"))  # every writer finished its rename
    assert DiskEmbeddingCache(tmp_path).nbytes <= budget + processes_count * entry_bytes


# ---------------------------------------------------------------- with the predictor


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_a_warm_cache_skips_the_encoder_and_gives_the_same_masks(tmp_path, dtype):
    image = np.random.default_rng(0).integers(0, 255, (40, 50), dtype=np.uint8)
    boxes = np.array([[3, 4, 30, 25], [10, 12, 45, 38]])
    cold = stub_predictor(disk_cache=DiskEmbeddingCache(tmp_path, dtype=dtype))
    cold.set_image(image)
    cold_result = cold.predict(boxes)
    assert cold.model.encode_calls == 1 and len(cold.disk_cache) == 1

    warm = stub_predictor(disk_cache=DiskEmbeddingCache(tmp_path, dtype=dtype))  # a new session
    warm.set_image(image.copy())
    warm_result = warm.predict(boxes)
    np.testing.assert_array_equal(warm_result.masks, cold_result.masks)
    np.testing.assert_array_equal(warm_result.low_res_logits, cold_result.low_res_logits)
    assert warm.model.encode_calls == 0 and warm.disk_cache.stats.hits == 1
    if dtype == "float32":  # and exactly what a predictor without a disk cache gives
        plain = stub_predictor()
        plain.set_image(image)
        plain_logits = plain.predict(boxes).low_res_logits
        np.testing.assert_array_equal(plain_logits, warm_result.low_res_logits)

    other_weights = stub_predictor(seed=1, disk_cache=DiskEmbeddingCache(tmp_path, dtype=dtype))
    other_weights.set_image(image)
    assert other_weights.model.encode_calls == 1  # never another model's features


def test_feature_dtype_and_precision_are_part_of_the_encoder_identity():
    plain = stub_predictor().encoder_identity
    assert stub_predictor().encoder_identity == plain
    assert stub_predictor(feature_dtype=torch.float16).encoder_identity != plain
    assert stub_predictor(feature_dtype=torch.float32).encoder_identity == plain
    assert stub_predictor(precision="bf16").encoder_identity != plain


def test_a_damaged_entry_is_recomputed_with_the_same_result(tmp_path):
    image = np.random.default_rng(1).integers(0, 255, (32, 32), dtype=np.uint8)
    first = stub_predictor(disk_cache=DiskEmbeddingCache(tmp_path))
    encoded = first.encode(image)
    (path,) = [p for p, _, _ in first.disk_cache.entries()]
    _damage_flip_payload_byte(path)
    second = stub_predictor(disk_cache=DiskEmbeddingCache(tmp_path))
    again = second.encode(image)
    assert second.model.encode_calls == 1 and second.disk_cache.stats.corrupt == 1
    assert_same_features(again.features, encoded.features)


def test_volume_segmentation_warm_equals_cold(tmp_path):
    rng = np.random.default_rng(2)
    volume = rng.integers(0, 255, (6, 40, 40), dtype=np.uint8)
    boxes = np.array([[5, 5, 1, 30, 30, 4], [10, 8, 0, 35, 36, 5]])
    cold = stub_predictor(disk_cache=DiskEmbeddingCache(tmp_path))
    cold_segs = run_to_end(segment_volume(cold, volume, boxes))
    warm = stub_predictor(disk_cache=DiskEmbeddingCache(tmp_path))
    warm_segs = run_to_end(segment_volume(warm, volume, boxes, volume_key="another name"))
    np.testing.assert_array_equal(warm_segs, cold_segs)
    assert cold.model.encode_calls == 6 and warm.model.encode_calls == 0
