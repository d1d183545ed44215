"""A process that hammers a shared disk embedding cache (for the many-writer test): it reads
and writes the same keys as its siblings, in its own order, and checks every entry it reads
against the features that key must hold. Importable by ``multiprocessing`` children."""

from __future__ import annotations

import torch

from napari_swinlitemedsam.inference.disk_cache import DiskEmbeddingCache
from napari_swinlitemedsam.model.segmenter import ImageFeatures
from napari_swinlitemedsam.model.skip_mask_decoder import SkipContext

KEYS = 8


def expected_features(index: int) -> ImageFeatures:
    """The features of key ``index``: an embedding and skip tensors (~300 kB in float32)."""
    generator = torch.Generator().manual_seed(index)
    return ImageFeatures(
        torch.randn(1, 256, 16, 16, generator=generator),
        SkipContext(
            torch.randn(1, 16, 32, 32, generator=generator),
            torch.randn(1, 32, 16, 16, generator=generator),
        ),
    )


def key_of(index: int) -> str:
    return f"{index:02x}" * 32


def hammer(folder: str, max_bytes: int, seed: int, rounds: int, start, results) -> None:
    """Wait for ``start`` (a Barrier), then ``rounds`` passes over the keys; puts
    ``(seed, hits, misses, corrupt, wrong)`` on the ``results`` queue."""
    cache = DiskEmbeddingCache(folder, max_bytes=max_bytes)
    expected = {key_of(i): expected_features(i).tensors() for i in range(KEYS)}
    order = torch.randperm(KEYS, generator=torch.Generator().manual_seed(seed)).tolist()
    wrong = 0
    start.wait(timeout=600)  # a sibling that failed to start breaks the barrier, not the test
    for _ in range(rounds):
        for index in order:
            key = key_of(index)
            got = cache.get(key)
            if got is None:
                cache.put(key, ImageFeatures.from_tensors(expected[key]))
                continue
            tensors = got.tensors()
            if sorted(tensors) != sorted(expected[key]) or not all(
                torch.equal(tensors[name], expected[key][name]) for name in tensors
            ):
                wrong += 1
        # A process counts its own writes and rescans the folder every 64 of them (what a
        # cluster worker does), so with 8 keys between 4 processes each may see itself under
        # the budget and none evict. A scan per round makes eviction certain: the keys it
        # deletes are missed (and written) again later, whatever the interleaving.
        cache.evict()
    stats = cache.stats
    results.put((seed, stats.hits, stats.misses, stats.corrupt, wrong))
