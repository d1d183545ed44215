"""zarr and OME-Zarr stores open lazily, as one series item, and are embedded slice by slice."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from napari_swinlitemedsam.annotation.series_listing import list_series_items
from napari_swinlitemedsam.cli.embed import embed_image
from napari_swinlitemedsam.inference.disk_cache import DiskEmbeddingCache
from napari_swinlitemedsam.inference.intensity import to_uint8
from napari_swinlitemedsam.inference.predictor import model_input_uint8
from napari_swinlitemedsam.io.image_files import ImageFileError, read_image
from stub_segmenter import stub_predictor

ZARR_MAJOR = int(zarr.__version__.split(".")[0])


def stack(depth: int = 12) -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.integers(0, 4000, size=(depth, 48, 40), dtype=np.uint16)


def write_ome_zarr(path, volume: np.ndarray, spacing=(2.0, 0.5, 0.5)) -> None:
    """A minimal NGFF 0.4 image: (t, c, z, y, x) level 0 plus a 2x-downsampled level 1."""
    # OME-Zarr 0.4 is zarr format 2: zarr 2 (the declared floor) writes only that; zarr 3 must be
    # asked for it, and names the array call differently.
    if ZARR_MAJOR < 3:
        group = zarr.open_group(str(path), mode="w")
        new_array = group.create_dataset
    else:
        group = zarr.open_group(str(path), mode="w", zarr_format=2)
        new_array = group.create_array
    levels = [volume[None, None], volume[None, None, :, ::2, ::2]]
    for index, level in enumerate(levels):
        array = new_array(
            str(index), shape=level.shape, dtype=level.dtype, chunks=(1, 1, 1, *level.shape[3:])
        )
        array[...] = level
    group.attrs["multiscales"] = [
        {
            "version": "0.4",
            "axes": [{"name": n} for n in "tczyx"],
            "datasets": [
                {
                    "path": "0",
                    "coordinateTransformations": [{"type": "scale", "scale": [1, 1, *spacing]}],
                },
                {
                    "path": "1",
                    "coordinateTransformations": [
                        {"type": "scale", "scale": [1, 1, spacing[0], 1, 1]}
                    ],
                },
            ],
        }
    ]


def test_an_ome_zarr_opens_lazily_at_full_resolution_with_its_spacing(tmp_path):
    volume = stack()
    write_ome_zarr(tmp_path / "cells.ome.zarr", volume)
    image = read_image(tmp_path / "cells.ome.zarr")
    assert image.is_stack and tuple(image.data.shape) == volume.shape
    assert not isinstance(image.data, np.ndarray)  # a lazy array, nothing read yet
    assert image.spacing == (2.0, 0.5, 0.5)
    np.testing.assert_array_equal(np.asarray(image.data[5]), volume[5])


def test_a_plain_zarr_array_and_a_bad_store(tmp_path):
    volume = stack()
    zarr.save_array(str(tmp_path / "plain.zarr"), volume)
    image = read_image(tmp_path / "plain.zarr")
    np.testing.assert_array_equal(np.asarray(image.data), volume)
    (tmp_path / "empty.zarr").mkdir()
    with pytest.raises(ImageFileError, match="empty.zarr"):
        read_image(tmp_path / "empty.zarr")


def test_a_zarr_store_is_one_series_item_not_a_folder(tmp_path):
    write_ome_zarr(tmp_path / "a.ome.zarr", stack())
    zarr.save_array(str(tmp_path / "b.zarr"), stack())
    assert list_series_items(tmp_path) == [tmp_path / "a.ome.zarr", tmp_path / "b.zarr"]
    assert list_series_items(tmp_path / "a.ome.zarr") == [tmp_path / "a.ome.zarr"]


def test_embedding_a_zarr_stack_caches_the_same_slices_as_the_array_in_memory(tmp_path):
    volume = stack()
    write_ome_zarr(tmp_path / "cells.ome.zarr", volume)
    predictor = stub_predictor(disk_cache=DiskEmbeddingCache(tmp_path / "cache"))
    encoded, cached = embed_image(predictor, read_image(tmp_path / "cells.ome.zarr"))
    assert (encoded, cached) == (12, 0)
    # The stack in memory maps to the same uint8 slices only if its mapping is the sample's:
    # a 12-slice stack is sampled whole (12 <= 16 sample slices), so every key matches.
    whole = to_uint8(volume)
    cache = predictor.disk_cache
    for z in range(volume.shape[0]):
        key = cache.key_for(model_input_uint8(whole[z]), predictor.encoder_identity)
        assert key in cache
