"""Masks that live on disk: a chunked zarr store shaped like the image, written slice by slice.

A light-sheet or EM stack of tens of GB cannot have its masks as one numpy array in memory
(uint16 masks of a 2,000 x 2,048 x 2,048 stack are 16 GB). napari's Labels layer accepts a zarr
array as data: the viewer reads the slice on screen, and ``Labels.data_setitem`` (and so undo /
redo) writes the changed pixels straight into the store. A store is chunked one slice deep
(:func:`slice_chunks`), so writing one slice touches only that slice's chunks, and zarr does not
store chunks that hold only background.

Where masks live (:func:`masks_on_disk`): ``"memory"``, ``"disk"``, or ``"auto"``: on disk when
the image is not in memory (a dask / zarr / memory-mapped layer) or when the masks would take
more than :data:`DISK_MASKS_VOXELS` voxels; in memory otherwise, as always.

Where the store goes (:func:`default_masks_folder`): beside the image file, else in the series
output folder; the user may choose another folder. An existing store of the right shape is
opened, never overwritten: painted labels survive closing and reopening the viewer.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

MASK_STORAGE = ("auto", "memory", "disk")
#: Above this many voxels (512 MiB of uint16 masks) "auto" keeps the masks on disk.
DISK_MASKS_VOXELS = 256 * 2**20
#: Largest chunk side in the plane; a chunk is one slice deep.
CHUNK_SIDE = 1024
MASKS_DTYPE = np.uint16
STORE_SUFFIX = "_masks.zarr"


class MaskStoreError(ValueError):
    """A masks store could not be made or opened; the message says what to do."""


def masks_on_disk(shape: tuple[int, ...], image_in_memory: bool, storage: str = "auto") -> bool:
    """Whether masks shaped ``shape`` ((H, W) or (D, H, W)) go to a zarr store on disk.

    ``storage``: one of :data:`MASK_STORAGE`; ``"auto"`` decides by the image (lazy -> disk) and
    by size (more than :data:`DISK_MASKS_VOXELS` voxels -> disk). 2D images stay in memory.
    """
    if storage not in MASK_STORAGE:
        raise ValueError(f"unknown mask storage {storage!r}; use one of {MASK_STORAGE}")
    if storage != "auto":
        return storage == "disk"
    if len(shape) != 3:
        return False
    return not image_in_memory or int(np.prod(shape, dtype=np.int64)) > DISK_MASKS_VOXELS


def default_masks_folder(
    image_path: str | os.PathLike | None, series_output: str | os.PathLike | None = None
) -> Path | None:
    """Where a masks store goes by default: the series output folder when labelling a series,
    else beside the image file (a ``.zarr`` image: beside the store); None when neither is
    known (an image made in the console): the user must choose a folder."""
    if series_output is not None:
        return Path(series_output)
    if image_path is None:
        return None
    return Path(image_path).parent


def store_path(folder: str | os.PathLike, image_name: str) -> Path:
    """``folder / "<image name>_masks.zarr"`` (the name made safe for a file name)."""
    stem = re.sub(r"\.(ome\.)?zarr$", "", str(image_name), flags=re.IGNORECASE)
    stem = re.sub(r"[^\w.-]+", "_", stem).strip("._") or "image"
    return Path(folder) / f"{stem}{STORE_SUFFIX}"


def slice_chunks(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Chunks one slice deep and at most :data:`CHUNK_SIDE` pixels on a side in the plane."""
    plane = tuple(min(int(n), CHUNK_SIDE) for n in shape[-2:])
    return (1,) * (len(shape) - 2) + plane


def open_masks_store(path: str | os.PathLike, shape: tuple[int, ...]):
    """The zarr array of masks at ``path``, shaped ``shape`` ((H, W) or (D, H, W), uint16).

    An existing store is opened for writing as it is (its labels are kept) when its shape
    matches; a store of another shape raises :class:`MaskStoreError`; a missing one is made
    (empty: nothing is written until a mask arrives).
    """
    zarr = _zarr()
    path = Path(path)
    shape = tuple(int(n) for n in shape)
    if path.exists():
        try:
            array = zarr.open_array(str(path), mode="r+")
        except Exception as error:  # noqa: BLE001 - zarr raises several types for a bad store
            raise MaskStoreError(
                f"{path} exists but is not a zarr array ({error}); choose another folder for "
                "the masks or move that folder away"
            ) from None
        if tuple(array.shape) != shape:
            raise MaskStoreError(
                f"{path} holds masks of shape {tuple(array.shape)}, the image is {shape}; "
                "choose another folder for the masks (the store is left as it is)"
            )
        return array
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return zarr.open_array(
            str(path),
            mode="w-",
            shape=shape,
            chunks=slice_chunks(shape),
            dtype=MASKS_DTYPE,
            fill_value=0,
        )
    except OSError as error:
        raise MaskStoreError(
            f"cannot make the masks store {path} ({error}); choose a folder you can write to"
        ) from None


def highest_label(data) -> int:
    """The largest id in ``data`` ((H, W) or (D, H, W), numpy or zarr), read one slice at a
    time when it is not in memory (memory stays that of one slice)."""
    if isinstance(data, np.ndarray) or len(data.shape) < 3:
        return int(np.max(np.asarray(data), initial=0))
    return max(
        (int(np.max(np.asarray(data[z]), initial=0)) for z in range(data.shape[0])), default=0
    )


def _zarr():
    try:
        import zarr
    except ImportError:
        raise MaskStoreError(
            'masks on disk need the zarr package; install it with: pip install "napari-swinlitemedsam[zarr]"'
        ) from None
    return zarr
