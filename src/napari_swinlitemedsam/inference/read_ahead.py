"""Decoded slices held for reuse, bounded in bytes: the read-ahead budget of a lazy stack.

Reading a slice of a compressed zarr / dask stack costs a decompression (and a disk read); the
annotator reads a slice when it encodes it ahead (prefetch) and again when a box is drawn on it
or a propagation passes. :class:`SliceReadAhead` keeps the mapped (H, W) uint8 slices of a
lazy stack, least recently used dropped first, within ``max_bytes``: memory stays bounded
whatever the depth of the stack, beside the embedding cache's own budget
(:class:`~.embedding_cache.EmbeddingCache`).
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

#: Default read-ahead budget: 64 MiB holds 16 slices of 2,048 x 2,048 uint8.
DEFAULT_READ_AHEAD_BYTES = 64 << 20


class SliceReadAhead:
    """LRU of slice index -> (H, W) uint8 slice within ``max_bytes`` (0: nothing is kept)."""

    def __init__(self, max_bytes: int = DEFAULT_READ_AHEAD_BYTES) -> None:
        if max_bytes < 0:
            raise ValueError("the read-ahead budget must be 0 bytes or more")
        self.max_bytes = int(max_bytes)
        self._slices: OrderedDict[int, np.ndarray] = OrderedDict()
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._slices)

    def __contains__(self, z: int) -> bool:
        return z in self._slices

    def get(self, z: int) -> np.ndarray | None:
        plane = self._slices.get(z)
        if plane is not None:
            self._slices.move_to_end(z)
        return plane

    def put(self, z: int, plane: np.ndarray) -> None:
        """Keep ``plane`` (dropping the least recently used slices to stay in budget); a slice
        bigger than the whole budget is not kept."""
        if z in self._slices:
            self.nbytes -= self._slices.pop(z).nbytes
        if plane.nbytes > self.max_bytes:
            return
        self._slices[z] = plane
        self.nbytes += plane.nbytes
        while self.nbytes > self.max_bytes:
            _, dropped = self._slices.popitem(last=False)
            self.nbytes -= dropped.nbytes

    def clear(self) -> None:
        self._slices.clear()
        self.nbytes = 0
