"""Opening zarr and OME-Zarr stacks lazily (nothing is read until a slice is asked for).

A path ending in ``.zarr`` (or ``.ome.zarr``) is one of:

* a zarr array: used as it is;
* an OME-Zarr image (NGFF 0.4 ``multiscales`` attribute, or 0.5 under ``ome``): level 0 (full
  resolution) is used, axes of size 1 (time, channel) are dropped, and the level's ``scale``
  transformation gives the voxel spacing;
* a group holding one array: that array.

The result is a dask array over the store (chunks as stored), so slices are read on demand by
:class:`~napari_swinlitemedsam.inference.volume_slices.VolumeSlices`. Needs the ``zarr``
package (``pip install "napari-swinlitemedsam[zarr]"``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ZARR_SUFFIXES = (".ome.zarr", ".zarr")


class ZarrStackError(ValueError):
    """A zarr store could not be opened as a (D, H, W) or (H, W) image."""


@dataclass(frozen=True)
class ZarrStack:
    """A lazily opened stack: ``data`` (dask array, (D, H, W) or (H, W)) and its ``spacing``
    per axis of ``data`` (None when the store does not say)."""

    data: object
    spacing: tuple[float, ...] | None


def is_zarr_path(path: str | os.PathLike) -> bool:
    return Path(path).name.lower().endswith(ZARR_SUFFIXES)


def open_zarr_stack(path: str | os.PathLike) -> ZarrStack:
    """Open ``path`` lazily (layouts in the module docstring); raises :class:`ZarrStackError`."""
    try:
        import dask.array as da
        import zarr
    except ImportError:
        raise ZarrStackError(
            f"{path}: zarr stores need the zarr package; install it with: "
            'pip install "napari-swinlitemedsam[zarr]"'
        ) from None
    path = Path(path)
    if not path.exists():
        raise ZarrStackError(f"{path}: no such zarr store")
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as error:  # noqa: BLE001 - zarr raises several types for a bad store
        raise ZarrStackError(f"{path}: not a readable zarr store ({error})") from None
    spacing = None
    if isinstance(node, zarr.Group):
        attributes = dict(node.attrs)
        multiscales = attributes.get("multiscales") or attributes.get("ome", {}).get("multiscales")
        if multiscales:
            dataset = multiscales[0]["datasets"][0]
            array = node[dataset["path"]]
            spacing = _scale_of(dataset)
        else:
            arrays = list(node.array_keys())
            if len(arrays) != 1:
                raise ZarrStackError(
                    f"{path}: a zarr group with {len(arrays)} arrays and no OME-Zarr metadata; "
                    "point to the array itself (e.g. image.zarr/0)"
                )
            array = node[arrays[0]]
    else:
        array = node
    data = da.from_zarr(array)
    keep = [axis for axis, size in enumerate(data.shape) if size != 1]
    if len(keep) not in (2, 3):
        raise ZarrStackError(
            f"{path}: shape {tuple(data.shape)} is neither a 2D image nor a (D, H, W) stack "
            "once axes of size 1 are dropped; store one channel per image"
        )
    data = data[tuple(slice(None) if axis in keep else 0 for axis in range(data.ndim))]
    if spacing is not None:
        spacing = tuple(spacing[axis] for axis in keep)
    return ZarrStack(data, spacing)


def _scale_of(dataset: dict) -> tuple[float, ...] | None:
    for transform in dataset.get("coordinateTransformations", []):
        if transform.get("type") == "scale":
            return tuple(float(value) for value in transform["scale"])
    return None
