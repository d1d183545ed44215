"""Fine-tuning pairs from masks on disk: only the labelled slices, read one at a time."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from napari_swinlitemedsam.annotation.finetune_job import training_pair


def test_masks_on_disk_give_only_their_labelled_slices(tmp_path):
    zarr = pytest.importorskip("zarr")
    image = np.arange(6 * 5 * 4, dtype=np.uint16).reshape(6, 5, 4)
    store = zarr.open_array(
        str(tmp_path / "m.zarr"), mode="w", shape=(6, 5, 4), chunks=(1, 5, 4), dtype="u2"
    )
    assert training_pair(da.from_array(image, chunks=(1, 5, 4)), store, rgb=False) is None
    store[1, 2, 2], store[4, 0:2, 0] = 3, 7
    images, labels = training_pair(da.from_array(image, chunks=(1, 5, 4)), store, rgb=False)
    np.testing.assert_array_equal(images, image[[1, 4]])
    np.testing.assert_array_equal(labels, store[:][[1, 4]])
    with pytest.raises(ValueError, match="shaped like the image"):
        training_pair(image[:5], store, rgb=False)
