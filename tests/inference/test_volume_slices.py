"""Stacks read one slice at a time: the same uint8 slices as the whole-volume mapping for
arrays in memory, a bounded number of reads for lazy ones, and 3D propagation on either."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from napari_swinlitemedsam.inference.generators import run_to_end
from napari_swinlitemedsam.inference.intensity import to_uint8
from napari_swinlitemedsam.inference.volume import segment_volume
from napari_swinlitemedsam.inference.volume_slices import SAMPLE_SLICES, VolumeSlices
from stub_segmenter import stub_predictor


class CountingStore:
    """A (D, H, W) array-like that counts the slices read through it (as a zarr store would)."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array
        self.shape = array.shape
        self.dtype = array.dtype
        self.ndim = array.ndim
        self.slices_read: list[int] = []

    def __getitem__(self, index):
        index = index if isinstance(index, tuple) else (index,)
        z = index[0]
        zs = range(*z.indices(self.shape[0])) if isinstance(z, slice) else [int(z)]
        self.slices_read.extend(zs)
        return self.array[index]


def blobs(depth: int = 40, size: int = 64, seed: int = 0) -> np.ndarray:
    """(D, H, W) float32: noise plus a bright ball, zeros at the border (like microscopy)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[:depth, :size, :size]
    ball = ((z - depth / 2) ** 2 / (depth / 3) ** 2 + (y - 32) ** 2 / 225 + (x - 30) ** 2 / 225) < 1
    volume = rng.normal(100.0, 10.0, (depth, size, size)) + 400.0 * ball
    volume[:, :2] = 0
    return volume.astype(np.float32)


@pytest.mark.parametrize(
    "volume",
    [
        blobs(),
        blobs() - 1200.0,  # CT-like: air below -500 selects the soft-tissue window
        np.where(blobs() > 300, np.nan, blobs()),  # non-finite values are filled first
        (blobs() > 300),  # bool passes through as 0/255
        np.clip(blobs(), 0, 255).astype(np.uint8),  # uint8 passes through unchanged
    ],
    ids=["float", "ct", "nan", "bool", "uint8"],
)
def test_in_memory_slices_equal_the_whole_volume_mapping(volume):
    slices = VolumeSlices(volume)
    whole = to_uint8(volume)
    for z in range(volume.shape[0]):
        np.testing.assert_array_equal(slices[z], whole[z])  # same code, same data: exact
    assert slices.shape == volume.shape


def test_a_lazy_stack_reads_only_the_sample_then_the_slices_asked_for():
    store = CountingStore(blobs(depth=120))
    lazy = da.from_array(store, chunks=(1, 64, 64))
    slices = VolumeSlices(lazy)
    sampled = sorted(set(store.slices_read))
    assert len(sampled) == SAMPLE_SLICES and sampled[0] == 0 and sampled[-1] == 119
    store.slices_read.clear()
    plane = slices[57]
    assert sorted(set(store.slices_read)) == [57]
    assert plane.dtype == np.uint8 and plane.shape == (64, 64)


def test_the_sample_mapping_is_close_to_the_whole_volume_mapping():
    volume = blobs(depth=120)
    lazy = VolumeSlices(da.from_array(volume, chunks=(1, 64, 64)))
    whole = to_uint8(volume)
    # Percentiles of 16 of 120 slices differ slightly from those of all of them; on this
    # stack no voxel moves by more than 3 grey levels of 255.
    worst = max(int(np.abs(lazy[z].astype(int) - whole[z]).max()) for z in range(120))
    assert worst <= 3


def test_a_multiscale_list_is_read_at_full_resolution():
    volume = blobs()
    slices = VolumeSlices([volume, volume[:, ::2, ::2]])
    assert slices.shape == volume.shape
    np.testing.assert_array_equal(slices[3], to_uint8(volume)[3])


def test_bad_input_is_explained():
    with pytest.raises(ValueError, match=r"\(D, H, W\)"):
        VolumeSlices(np.zeros((4, 4)))
    with pytest.raises(TypeError, match="one slice at a time"):
        VolumeSlices(blobs())[1:3]
    with pytest.raises(IndexError, match="outside a stack of 40"):
        VolumeSlices(blobs())[40]


def test_propagation_on_a_lazy_stack_reads_only_visited_slices_and_equals_in_memory():
    volume = np.clip(blobs(depth=60), 0, 255).astype(np.uint8)
    store = CountingStore(volume)
    lazy = VolumeSlices(da.from_array(store, chunks=(1, 64, 64)))
    box = np.array([[16, 18, 25, 45, 46, 34]])  # x0, y0, z0, x1, y1, z1
    store.slices_read.clear()
    labels_lazy = run_to_end(segment_volume(stub_predictor(), lazy, box))
    visited = set(store.slices_read)
    assert visited <= set(range(25, 35)) and 30 in visited
    labels_memory = run_to_end(segment_volume(stub_predictor(), volume, box))
    np.testing.assert_array_equal(labels_lazy, labels_memory)  # same code path, same slices


def test_a_lazy_stack_keeps_read_slices_within_the_read_ahead_budget():
    store = CountingStore(blobs(depth=40))
    plane_bytes = 64 * 64  # one uint8 slice
    slices = VolumeSlices(
        da.from_array(store, chunks=(1, 64, 64)), read_ahead_bytes=3 * plane_bytes
    )
    store.slices_read.clear()
    first = slices[5].copy()
    np.testing.assert_array_equal(slices[5], first)
    assert store.slices_read == [5], "a slice read once is served from the read-ahead"
    for z in (6, 7, 8):
        slices[z]
    assert slices.read_ahead.nbytes == 3 * plane_bytes  # the budget, not more
    assert 5 not in slices.read_ahead, "the least recently used slice is dropped first"
    store.slices_read.clear()
    np.testing.assert_array_equal(slices[5], first)
    assert store.slices_read == [5]


def test_in_memory_and_zero_budget_stacks_keep_no_slices():
    assert VolumeSlices(blobs()).read_ahead.max_bytes == 0
    store = CountingStore(blobs())
    slices = VolumeSlices(da.from_array(store, chunks=(1, 64, 64)), read_ahead_bytes=0)
    store.slices_read.clear()
    slices[3], slices[3]
    assert store.slices_read == [3, 3] and slices.read_ahead.nbytes == 0
