"""The frozen-encoder feature cache keeps within its budget, also when a key is stored again."""

from __future__ import annotations

import torch

from napari_swinlitemedsam.training.feature_cache import FeatureCache


def entry(values: int):
    """(embedding, skips) of ``values`` float32 numbers: 4 * values bytes."""
    return torch.zeros(values), None


def test_storing_a_key_again_counts_its_bytes_once():
    cache = FeatureCache(max_bytes=400)
    cache.put("a", entry(50))
    cache.put("a", entry(50))
    cache.put("a", entry(50))
    assert cache.bytes_used == 200
    cache.put("b", entry(50))  # fits beside "a": nothing was evicted
    assert cache.get("a") is not None and cache.get("b") is not None
    assert cache.bytes_used == 400


def test_the_oldest_entries_go_first_and_oversized_ones_are_not_kept():
    cache = FeatureCache(max_bytes=400)
    cache.put("a", entry(50))
    cache.put("b", entry(50))
    cache.put("c", entry(50))
    assert cache.get("a") is None and cache.bytes_used == 400
    skips = [torch.zeros(10), torch.zeros(10)]
    cache.put("d", (torch.zeros(100), skips))  # 480 bytes with its skips: over the budget
    assert cache.get("d") is None and cache.bytes_used == 400
    cache.put("b", entry(25))  # replaced by a smaller value
    assert cache.bytes_used == 300
