"""A stack the models read one slice at a time: numpy, dask, zarr or a napari multiscale list.

Labelling a light-sheet or EM stack of tens of GB must not read it whole. :class:`VolumeSlices`
wraps any array-like with ``shape``, ``dtype`` and ``[z]`` indexing and hands out one (H, W)
uint8 slice at a time, mapped to uint8 with ONE mapping for the whole stack (the intensity
policy of :mod:`.intensity`), decided once:

* an in-memory ``numpy.ndarray`` -> from every voxel, exactly as ``to_uint8(volume)`` (so a slice
  equals ``to_uint8(volume)[z]`` bit for bit, as before);
* anything else (dask, zarr, memory-mapped stores) -> from a sample of at most
  :data:`SAMPLE_SLICES` evenly spaced slices, first and last included, so opening a stack costs a
  few slice reads whatever its depth. The CT test (air <= -500) and the percentiles are then those
  of the sample.

A napari multiscale image (a list/tuple of arrays, largest first) is read at full resolution,
whatever level napari displays.

Mapped slices of a stack not in memory are kept for reuse within a read-ahead budget
(:class:`~.read_ahead.SliceReadAhead`, ``read_ahead_bytes``, default
:data:`~.read_ahead.DEFAULT_READ_AHEAD_BYTES`): a slice encoded ahead is not read from disk
again when a box is drawn on it. In-memory stacks keep nothing (their slices are at hand).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from napari_swinlitemedsam.inference.intensity import (
    MODALITIES,
    Uint8Mapping,
    intensity_mapping,
    to_uint8,
)
from napari_swinlitemedsam.inference.read_ahead import DEFAULT_READ_AHEAD_BYTES, SliceReadAhead

#: Slices read to decide the intensity mapping of a stack that is not in memory.
SAMPLE_SLICES = 16


class VolumeSlices:
    """(D, H, W) slices of ``data`` as uint8, read on demand.

    ``data``: (D, H, W) array-like (numpy, dask, zarr, ...) or a multiscale list of them
    (level 0 is used). ``modality`` / ``window``: as :func:`.intensity.to_uint8`.
    ``read_ahead_bytes``: budget of mapped slices kept for reuse when not in memory.
    ``len(slices)`` is D; ``slices[z]`` is an (H, W) uint8 numpy array; ``slices.shape`` is
    (D, H, W); ``slices.reads`` counts slice reads (how lazy the caller was);
    ``slices.read_ahead.nbytes`` is the memory the kept slices take.
    """

    def __init__(
        self,
        data,
        modality: str = "auto",
        window: str | tuple[float, float] | None = None,
        read_ahead_bytes: int = DEFAULT_READ_AHEAD_BYTES,
    ) -> None:
        self.data = full_resolution(data)
        if len(self.data.shape) != 3:
            raise ValueError(f"expected a (D, H, W) stack, got shape {tuple(self.data.shape)}")
        self.shape: tuple[int, int, int] = tuple(int(n) for n in self.data.shape)  # type: ignore[assignment]
        self.dtype = np.dtype(self.data.dtype)
        self.in_memory = isinstance(self.data, np.ndarray)
        self.reads = 0
        self.read_ahead = SliceReadAhead(0 if self.in_memory else read_ahead_bytes)
        if modality not in MODALITIES:
            raise ValueError(f"Unknown modality {modality!r}; use one of {MODALITIES}.")
        self.modality = modality
        self.mapping = self._decide_mapping(modality, window)

    def __len__(self) -> int:
        return self.shape[0]

    def __iter__(self) -> Iterator[np.ndarray]:
        """Every slice in order, each read when it is reached."""
        for z in range(self.shape[0]):
            yield self[z]

    def __getitem__(self, z: int) -> np.ndarray:
        """Slice ``z`` as (H, W) uint8."""
        if not isinstance(z, (int, np.integer)):
            raise TypeError("VolumeSlices is read one slice at a time: index it with an int")
        depth = self.shape[0]
        if not -depth <= z < depth:
            raise IndexError(f"slice {z} is outside a stack of {depth} slices")
        z = int(z) % depth
        kept = self.read_ahead.get(z)
        if kept is not None:
            return kept
        plane = self.as_uint8(self.read(z))
        self.read_ahead.put(z, plane)
        return plane

    def read(self, z: int) -> np.ndarray:
        """Slice ``z`` as stored (H, W), not mapped."""
        self.reads += 1
        return np.asarray(self.data[z])

    def as_uint8(self, plane: np.ndarray) -> np.ndarray:
        """One stored plane (H, W) -> uint8 with the stack's mapping."""
        if self.modality == "uint8":
            return to_uint8(plane, modality="uint8")
        if self.mapping is None:
            if plane.dtype == np.bool_:
                return plane.astype(np.uint8) * np.uint8(255)
            return plane
        return self.mapping.apply(plane)

    def sample_indices(self) -> list[int]:
        """The slices the mapping of a stack not in memory is decided on."""
        depth = self.shape[0]
        count = min(depth, SAMPLE_SLICES)
        return sorted({int(round(z)) for z in np.linspace(0, depth - 1, count)})

    def _decide_mapping(self, modality: str, window) -> Uint8Mapping | None:
        if (
            modality == "uint8"
            or window is None
            and self.dtype in (np.dtype(np.uint8), np.dtype(np.bool_))
        ):
            return None  # passed through unchanged, as to_uint8 does
        if self.in_memory:
            return intensity_mapping(self.data, modality=modality, window=window)
        sample = np.stack([self.read(z) for z in self.sample_indices()])
        return intensity_mapping(sample, modality=modality, window=window)


def full_resolution(data):
    """Level 0 of a napari multiscale list/tuple (largest first); ``data`` itself otherwise."""
    if isinstance(data, Sequence) and not isinstance(data, np.ndarray) and len(data) > 0:
        first = data[0]
        if hasattr(first, "shape") and hasattr(first, "dtype"):
            return first
    return data
