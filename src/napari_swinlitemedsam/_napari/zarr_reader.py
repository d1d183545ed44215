"""napari reader for zarr and OME-Zarr stacks, opened lazily (nothing is read until shown).

The layer holds the dask array of :func:`~napari_swinlitemedsam.io.zarr_stacks.open_zarr_stack`
(full resolution, axes of size 1 dropped) with the store's voxel spacing as its scale, so the
annotator reads only the slices it needs and keeps the masks in a zarr store beside it
(``io.label_stores``).
"""

from __future__ import annotations

import os
from pathlib import Path

from napari.types import LayerDataTuple

from napari_swinlitemedsam.io.zarr_stacks import is_zarr_path, open_zarr_stack


def get_zarr_reader(path: str | list[str]):
    """The reader function when ``path`` is a ``.zarr`` store (or a list of them), else None."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths or not all(is_zarr_path(p) and Path(p).is_dir() for p in paths):
        return None
    return read_zarr_stacks


def read_zarr_stacks(path: str | list[str]) -> list[LayerDataTuple]:
    """One lazy image layer per store; ZarrStackError (a ValueError) says why one cannot open."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    layers = []
    for item in paths:
        stack = open_zarr_stack(item)
        attributes = {"name": Path(item).name}
        if stack.spacing is not None:
            attributes["scale"] = stack.spacing
        layers.append((stack.data, attributes, "image"))
    return layers
