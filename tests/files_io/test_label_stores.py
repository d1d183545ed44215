"""Masks on disk: when the switch chooses a zarr store, where it goes, and that an existing
store is reopened with its labels, never overwritten."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from napari_swinlitemedsam.io.label_stores import (
    DISK_MASKS_VOXELS,
    MaskStoreError,
    default_masks_folder,
    highest_label,
    masks_on_disk,
    open_masks_store,
    slice_chunks,
    store_path,
)


def test_the_switch_keeps_normal_stacks_in_memory_and_lazy_or_huge_ones_on_disk():
    normal = (60, 256, 256)
    assert not masks_on_disk(normal, image_in_memory=True)
    assert masks_on_disk(normal, image_in_memory=False)  # a dask / zarr layer
    huge = (DISK_MASKS_VOXELS // (512 * 512) + 1, 512, 512)
    assert masks_on_disk(huge, image_in_memory=True)
    assert not masks_on_disk((4096, 4096), image_in_memory=False), "2D masks stay in memory"
    assert masks_on_disk(normal, True, "disk") and not masks_on_disk(huge, False, "memory")
    with pytest.raises(ValueError, match="auto"):
        masks_on_disk(normal, True, "cloud")


def test_the_store_goes_beside_the_image_or_in_the_series_output(tmp_path):
    image = tmp_path / "stacks" / "embryo.ome.zarr"
    assert default_masks_folder(image) == tmp_path / "stacks"
    assert default_masks_folder(image, tmp_path / "out") == tmp_path / "out"
    assert default_masks_folder(None) is None
    assert store_path(tmp_path, "embryo.ome.zarr") == tmp_path / "embryo_masks.zarr"
    assert store_path(tmp_path, "a b/c") == tmp_path / "a_b_c_masks.zarr"


def test_a_store_is_chunked_by_slice_and_reopened_with_its_labels(tmp_path):
    path = tmp_path / "cells_masks.zarr"
    shape = (5, 40, 2100)
    store = open_masks_store(path, shape)
    assert store.chunks == slice_chunks(shape) == (1, 40, 1024)
    assert store.dtype == np.uint16 and highest_label(store) == 0
    store[3, 10:20, 5:15] = 7
    again = open_masks_store(path, shape)  # reopened, not overwritten
    assert highest_label(again) == 7
    assert np.count_nonzero(zarr.open_array(str(path), mode="r")[:]) == 100


def test_a_store_of_another_shape_or_no_store_at_all_is_explained(tmp_path):
    open_masks_store(tmp_path / "m.zarr", (3, 8, 8))
    with pytest.raises(MaskStoreError, match=r"\(3, 8, 8\).*another folder"):
        open_masks_store(tmp_path / "m.zarr", (4, 8, 8))
    (tmp_path / "file.zarr").write_text("not a store")
    with pytest.raises(MaskStoreError, match="another folder"):
        open_masks_store(tmp_path / "file.zarr", (3, 8, 8))


def test_highest_label_of_a_store_is_read_one_slice_at_a_time():
    class Slices:
        shape, dtype = (4, 8, 8), np.uint16

        def __init__(self):
            self.asked = []

        def __getitem__(self, z):
            self.asked.append(z)
            return np.full((8, 8), z, np.uint16)

    data = Slices()
    assert highest_label(data) == 3 and data.asked == [0, 1, 2, 3]
    assert highest_label(np.array([[0, 9]])) == 9
