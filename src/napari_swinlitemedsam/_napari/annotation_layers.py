"""The layers of one annotated image: the image, its masks, the boxes and the clicks.

:class:`AnnotationLayers` creates the layers the user did not give (all in the image's frame),
adds them to the viewer, and connects and disconnects their events in one place, so the
annotator's own code deals with objects and jobs, not with layer plumbing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from napari.layers import Image, Labels

from napari_swinlitemedsam._napari import layer_io
from napari_swinlitemedsam._napari.mask_storage import LabelMaximum, MaskStorage
from napari_swinlitemedsam.annotation.annotator_state import BoxSync, ShapeBox, SliceKey


class AnnotationLayers:
    """``image`` with a masks layer (``labels``, new when None), a box layer and a click layer.

    When ``labels`` is None, ``new_masks`` (``(layer, store path or None)`` from
    :meth:`.MaskStorage.make_layer`; default: empty masks in memory) is added to the viewer;
    ``masks_store`` is the store's path (None: masks in memory or the user's own layer).

    Raises :class:`~.layer_io.ImageLayerError` before touching the viewer when the image cannot
    be annotated or ``labels`` is not shaped like it.
    """

    def __init__(
        self,
        viewer,
        image: Image,
        labels: Labels | None = None,
        new_masks: tuple[Labels, Path | None] | None = None,
    ) -> None:
        self.shape = self.check(image, labels)
        self.masks_store: Path | None = None
        # The layers are made here and kept: what the viewer hands back may be napari's
        # public-only proxy of them, which is not the layer its events carry.
        if labels is None:
            labels, self.masks_store = new_masks or MaskStorage("memory").make_layer(image)
            viewer.add_layer(labels)
        self.image, self.labels = image, labels
        self.highest_label = LabelMaximum(labels)
        self.points = layer_io.make_points_layer(image)
        self.boxes = layer_io.make_box_layer(image)
        viewer.add_layer(self.points)
        viewer.add_layer(self.boxes)
        self._handlers: list[tuple[object, Callable]] = []

    @staticmethod
    def check(image: Image, labels: Labels | None = None) -> tuple[int, ...]:
        """The image's spatial shape, or :class:`~.layer_io.ImageLayerError` saying why it
        cannot be annotated (into ``labels``)."""
        shape = layer_io.spatial_shape(image)
        if labels is not None and tuple(labels.data.shape) != shape:
            raise layer_io.ImageLayerError(
                f"the labels layer '{labels.name}' has shape {tuple(labels.data.shape)}, "
                f"the image {shape}; choose a labels layer shaped like the image (or a new one)"
            )
        return shape

    @property
    def is_stack(self) -> bool:
        return len(self.shape) == 3

    @property
    def depth(self) -> int | None:
        """Slices of a (D, H, W) stack; None for a 2D image."""
        return self.shape[0] if self.is_stack else None

    def current_slice(self, viewer) -> SliceKey:
        """The slice ``viewer`` shows (``None`` for a 2D image)."""
        if not self.is_stack:
            return None
        z = self.image.world_to_data(viewer.dims.point)[0]
        return int(np.clip(np.floor(z + 0.5), 0, self.shape[0] - 1))

    def read_boxes(self) -> list[ShapeBox]:
        """The box layer's rectangles as pixel boxes; rectangles of a click's size on screen are
        refused (see :func:`~.layer_io.smallest_box_side`)."""
        min_side = layer_io.smallest_box_side(self.boxes)
        return layer_io.read_boxes(self.boxes, self.shape, min_side)

    def remove_boxes(self, indices: list[int]) -> None:
        """Delete the shapes at ``indices`` from the box layer (the others keep their ids)."""
        self.boxes.selected_data = set(indices)
        self.boxes.remove_selected()

    def apply_sync(self, sync: BoxSync) -> None:
        """Show a box sync: ids and colours on the boxes, masks of removed boxes erased (one
        undo step), the newest object as the masks layer's selected label."""
        layer_io.write_box_ids(self.boxes, sync.ids, self.labels)
        if sync.removed:
            with self.labels.block_history():
                for object_id, z in sync.removed:
                    whole = object_id in sync.deleted_objects
                    layer_io.erase_object(self.labels, object_id, None if whole else z)
        if sync.added:
            self.labels.selected_label = sync.added[-1][0]

    def selected_object(self) -> int | None:
        """The object id of the (last) selected box, None when none is selected or it has none."""
        if not self.boxes.selected_data:
            return None
        ids = layer_io.object_ids(self.boxes)
        index = max(self.boxes.selected_data)
        return int(ids[index]) if index < len(ids) and ids[index] > 0 else None

    def connect(
        self,
        boxes_changed: Callable,
        boxes_pasted: Callable,
        clicks_changed: Callable,
        image_changed: Callable,
    ) -> None:
        """Call the handlers on finished edits of the boxes and clicks and on new image data."""
        self._handlers = [
            (self.boxes.events.data, boxes_changed),
            (self.boxes.events.features, boxes_pasted),  # pasting emits only a features event
            (self.points.events.data, clicks_changed),
            (self.image.events.data, image_changed),
        ]
        for emitter, handler in self._handlers:
            emitter.connect(handler)

    def disconnect(self) -> None:
        for emitter, handler in self._handlers:
            emitter.disconnect(handler)
        self._handlers = []
        self.highest_label.disconnect()

    def drop_points(self) -> None:
        """The click layer left the viewer: stop listening to it (annotation goes on)."""
        clicks = self.points.events.data
        for emitter, handler in self._handlers:
            if emitter is clicks:
                emitter.disconnect(handler)
        self._handlers = [(e, h) for e, h in self._handlers if e is not clicks]
        self.points = None
