"""A least-recently-used in-memory cache of encoded slices, bounded in bytes.

Keys are whatever identifies an encoded slice (e.g. ``(image_key, slice_index)``); values are
:class:`~napari_swinlitemedsam.model.segmenter.ImageFeatures` plus the slice's frame sizes.
The budget is in bytes, not entries: a Swin-LiteMedSAM slice holds about 16 MB of features and a
LiteMedSAM slice 4 MB, so an entry count would say nothing about memory.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np

from napari_swinlitemedsam.model.segmenter import ImageFeatures


@dataclass(frozen=True)
class EncodedSlice:
    """One encoded 2D image.

    Attributes:
        features: encoder output (batch 1) for the decoder.
        image_256: (3, 256, 256) float32 model input (used to derive prompts from boxes).
        original_size: (H, W) of the slice before resizing.
        new_size: (h, w) of the resized, unpadded part of the 256 frame.
    """

    features: ImageFeatures
    image_256: np.ndarray
    original_size: tuple[int, int]
    new_size: tuple[int, int]

    @property
    def nbytes(self) -> int:
        tensors = self.features.tensors().values()
        return int(sum(t.numel() * t.element_size() for t in tensors) + self.image_256.nbytes)


class EmbeddingCache:
    """LRU cache of :class:`EncodedSlice` limited to ``max_bytes`` (0 disables caching)."""

    def __init__(self, max_bytes: int = 1 << 30) -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Hashable, EncodedSlice] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    @property
    def nbytes(self) -> int:
        return self._bytes

    def get(self, key: Hashable) -> EncodedSlice | None:
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(key)
        return entry

    def put(self, key: Hashable, entry: EncodedSlice) -> None:
        if key in self._entries:
            self._bytes -= self._entries.pop(key).nbytes
        size = entry.nbytes
        if size > self.max_bytes:
            return
        self._entries[key] = entry
        self._bytes += size
        while self._bytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self._bytes -= evicted.nbytes

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0
