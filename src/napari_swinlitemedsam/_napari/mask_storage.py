"""Where the masks of a new masks layer live: in memory, or in a zarr store on disk.

The rule (which images get a store, the store's name and default folder) is in
:mod:`napari_swinlitemedsam.io.label_stores`; this module applies it to a napari image layer:
its data (lazy or in memory), its file (``layer.source.path``) and the user's choices in the
widget (storage ``auto`` / ``memory`` / ``disk`` and a folder).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from napari.layers import Image, Labels

from napari_swinlitemedsam._napari import layer_io
from napari_swinlitemedsam.inference.volume_slices import full_resolution
from napari_swinlitemedsam.io import label_stores


@dataclass
class MaskStorage:
    """The user's choice: ``storage`` (one of ``label_stores.MASK_STORAGE``) and the ``folder``
    of the stores (None: beside the image file, or in ``series_output`` when a series is open)."""

    storage: str = "auto"
    folder: Path | None = None
    series_output: Path | None = None

    def store_for(self, image: Image) -> Path | None:
        """The zarr store for ``image``'s masks, or None to keep them in memory.

        Raises :class:`~.layer_io.ImageLayerError` when the masks must go to disk (``disk``
        chosen) but no folder is known.
        """
        shape = layer_io.spatial_shape(image)
        in_memory = isinstance(full_resolution(image.data), np.ndarray)
        if not label_stores.masks_on_disk(shape, in_memory, self.storage):
            return None
        folder = self.folder or label_stores.default_masks_folder(
            image_file(image), self.series_output
        )
        if folder is None:
            if self.storage == "disk":
                raise layer_io.ImageLayerError(
                    f"'{image.name}' has no file to keep its masks beside; choose a folder for "
                    "the masks (Masks store: Folder...)"
                )
            return None  # auto, and nowhere to put a store: in memory, as before
        return label_stores.store_path(folder, image.name)

    def make_layer(self, image: Image) -> tuple[Labels, Path | None]:
        """A new masks layer for ``image`` and its store (None: in memory).

        Raises :class:`~.layer_io.ImageLayerError` when the store cannot be made or opened.
        """
        path = self.store_for(image)
        if path is None:
            return layer_io.make_labels_layer(image), None
        try:
            store = label_stores.open_masks_store(path, layer_io.spatial_shape(image))
        except label_stores.MaskStoreError as error:
            raise layer_io.ImageLayerError(str(error)) from None
        return layer_io.make_labels_layer(image, store), path


def image_file(image: Image) -> Path | None:
    """The file or folder ``image`` was read from (None when made in the console)."""
    path = getattr(image.source, "path", None)
    return None if not path else Path(path)


class LabelMaximum:
    """The largest id in a masks layer, cheap to ask for masks on disk.

    Masks in memory: ``np.max`` at each call (as before). Masks in a store: read once, slice by
    slice, then raised by every change entering the layer's undo history (``events.paint``:
    painting, fills, model output), so new objects never take an id already painted. It is an
    upper bound: erasing an object does not lower it.
    """

    def __init__(self, labels: Labels) -> None:
        self.labels = labels
        self.in_memory = isinstance(labels.data, np.ndarray)
        self._highest = 0 if self.in_memory else label_stores.highest_label(labels.data)
        if not self.in_memory:
            labels.events.paint.connect(self._painted)

    def __call__(self) -> int:
        if self.in_memory:
            return int(np.max(self.labels.data, initial=0))
        return self._highest

    def _painted(self, event) -> None:
        for atom in event.value or ():
            # data_setitem records (indices, old values, new values); painting and filling
            # record an entry with ``new_value``.
            new = getattr(atom, "new_value", None)
            new = atom[2] if new is None else new
            self._highest = max(self._highest, int(np.max(np.asarray(new), initial=0)))

    def disconnect(self) -> None:
        if not self.in_memory:
            self.labels.events.paint.disconnect(self._painted)
