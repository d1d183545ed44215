"""Reading boxes from and writing masks into napari layers, through napari's public API.

Masks enter a Labels layer only through ``Labels.data_setitem``, so every model output is one
entry of napari's undo history (Ctrl+Z / Ctrl+Shift+Z). A mask never takes pixels that belong
to another object unless ``overwrite`` is on, so hand-painted objects survive new boxes.
"""

from __future__ import annotations

import math
import warnings
from contextlib import ExitStack

import numpy as np
from napari.layers import Image, Labels, Points, Shapes

from napari_swinlitemedsam.annotation.annotator_state import ClickPoint, ShapeBox, SliceKey
from napari_swinlitemedsam.annotation.layer_coordinates import (
    MIN_BOX_SIDE,
    RectangleError,
    check_box_size,
    point_to_pixel,
    rectangle_to_box,
)

OBJECT_ID = "object_id"
POSITIVE = "positive"
POSITIVE_COLOR = "#33dd55"
NEGATIVE_COLOR = "#ff3344"


class ImageLayerError(ValueError):
    """The chosen image layer cannot be annotated (wrong dimensionality, multiscale...)."""


def spatial_shape(image: Image) -> tuple[int, ...]:
    """``(H, W)`` or ``(D, H, W)`` of an image layer: RGB channels dropped.

    Raises :class:`ImageLayerError` for layers that are not a 2D image or a 3D stack.
    """
    if image.multiscale:
        raise ImageLayerError(
            f"'{image.name}' is multiscale; open a single-resolution copy to annotate it"
        )
    shape = tuple(int(s) for s in image.data.shape)
    if image.rgb:
        shape = shape[:-1]
    if len(shape) not in (2, 3):
        raise ImageLayerError(
            f"'{image.name}' has shape {tuple(image.data.shape)}; the annotator needs a 2D image "
            "(H, W), an RGB image (H, W, 3) or a stack (D, H, W). For a time series or several "
            "channels, right-click the layer and choose 'Split Stack' (splits the first axis), "
            "then annotate one of the resulting layers"
        )
    return shape


def _same_frame(image: Image) -> dict:
    return {"scale": image.scale, "translate": image.translate}


def make_box_layer(image: Image) -> Shapes:
    """An empty Shapes layer for boxes, in the image's frame, ready to draw rectangles."""
    ndim = len(spatial_shape(image))
    layer = Shapes(
        ndim=ndim,
        name=f"{image.name} boxes",
        features={OBJECT_ID: np.zeros(0, dtype=np.int64)},
        face_color="transparent",
        edge_width=2,
        **_same_frame(image),
    )
    layer.feature_defaults = {OBJECT_ID: 0}
    layer.edge_width = 2
    return layer


def make_labels_layer(image: Image, data=None) -> Labels:
    """A Labels layer shaped like the image, in the image's frame: empty uint16 ids in memory,
    or ``data`` (e.g. a zarr masks store of the image's spatial shape, see
    :mod:`~napari_swinlitemedsam.io.label_stores`)."""
    shape = spatial_shape(image)
    # The scanner geometry of a CT/MR image travels along, so the masks save in its frame.
    geometry = {k: v for k, v in image.metadata.items() if k == "geometry"}
    return Labels(
        np.zeros(shape, dtype=np.uint16) if data is None else data,
        name=f"{image.name} masks",
        metadata=geometry,
        **_same_frame(image),
    )


def make_points_layer(image: Image) -> Points:
    """An empty Points layer for +/- clicks (feature ``positive``), in the image's frame."""
    ndim = len(spatial_shape(image))
    layer = Points(
        ndim=ndim,
        name=f"{image.name} clicks",
        features={POSITIVE: np.zeros(0, dtype=bool)},
        face_color=POSITIVE_COLOR,
        size=7,
        **_same_frame(image),
    )
    layer.feature_defaults = {POSITIVE: True}
    return layer


def set_click_sign(points: Points, positive: bool) -> None:
    """Make the next clicks positive (add to the object) or negative (remove from it)."""
    points.feature_defaults = {POSITIVE: positive}
    points.current_face_color = POSITIVE_COLOR if positive else NEGATIVE_COLOR


CLICK_SCREEN_PIXELS = 4.0
"""A rectangle narrower than this on screen is a click: napari draws a click as a rectangle
of about 2.5 screen pixels, whatever the zoom."""


def smallest_box_side(shapes: Shapes) -> int:
    """Pixels a box of ``shapes`` must cover on a side: :data:`MIN_BOX_SIDE`, more when zoomed
    out so far that a click covers more.

    The layer's ``scale_factor`` (world units per screen pixel, set by the canvas at each draw)
    is what napari itself sizes a click's rectangle with, in every napari version we support;
    the camera's zoom can run ahead of it between a zoom and the next draw.
    """
    world_per_pixel = float(np.min(np.abs(shapes.scale[-2:])))
    world_per_screen_pixel = float(shapes.scale_factor)
    if world_per_screen_pixel <= 0 or world_per_pixel <= 0:
        return MIN_BOX_SIDE
    return max(
        MIN_BOX_SIDE, math.ceil(CLICK_SCREEN_PIXELS * world_per_screen_pixel / world_per_pixel)
    )


def read_boxes(
    shapes: Shapes, image_shape: tuple[int, ...], min_side: int = MIN_BOX_SIDE
) -> list[ShapeBox]:
    """Every shape of the box layer as a :class:`ShapeBox` (box ``None`` when unusable).

    ``image_shape`` is ``(H, W)`` or ``(D, H, W)``; boxes partly outside the image are clipped to
    it. A box off the image, on a slice outside the stack, or covering fewer than ``min_side``
    pixels on a side after clipping gets ``box=None`` and a ``problem``. Non-rectangles count by
    their bounding box.
    """
    ids = object_ids(shapes)
    boxes = []
    for vertices, object_id in zip(shapes.data, ids):
        try:
            z, box = rectangle_to_box(vertices, image_shape=image_shape[-2:])
        except RectangleError as error:
            boxes.append(ShapeBox(int(object_id), None, None, str(error)))
            continue
        try:
            check_box_size(box, min_side)
        except RectangleError as error:
            boxes.append(ShapeBox(int(object_id), None, None, str(error), click=True))
            continue
        if z is not None and not 0 <= z < image_shape[0]:
            problem = f"the box is on slice {z}, outside the stack of {image_shape[0]} slices"
            boxes.append(ShapeBox(int(object_id), None, None, problem))
            continue
        boxes.append(ShapeBox(int(object_id), z, box))
    return boxes


def object_ids(shapes: Shapes) -> np.ndarray:
    """(N,) int64 object id stored with each shape (0 = none)."""
    if OBJECT_ID not in shapes.features:
        return np.zeros(len(shapes.data), dtype=np.int64)
    return shapes.features[OBJECT_ID].fillna(0).to_numpy(dtype=np.int64)


def write_box_ids(shapes: Shapes, ids: list[int], labels: Labels) -> None:
    """Store each shape's object id and colour its edge like its label."""
    colors = np.array([label_color(labels, i) for i in ids]).reshape(-1, 4)
    new_ids = np.asarray(ids, dtype=np.int64)
    if not np.array_equal(object_ids(shapes), new_ids):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # no colour property to drop
            shapes.features = {OBJECT_ID: new_ids}
        shapes.feature_defaults = {OBJECT_ID: 0}
    if len(ids) and not np.allclose(shapes.edge_color, colors):
        shapes.edge_color = colors


def label_color(labels: Labels, object_id: int) -> np.ndarray:
    """(4,) RGBA of ``object_id`` in the labels colormap (white for unassigned boxes)."""
    if object_id <= 0:
        return np.array([1.0, 1.0, 1.0, 1.0])
    return np.asarray(labels.colormap.map(object_id), dtype=np.float64).reshape(-1)[:4]


def read_clicks(points: Points) -> list[ClickPoint]:
    """The +/- clicks of the points layer, in data pixels (``x`` = column, ``y`` = row)."""
    if len(points.data) == 0:
        return []
    signs = (
        points.features[POSITIVE].fillna(True).to_numpy(dtype=bool)
        if POSITIVE in points.features
        else np.ones(len(points.data), dtype=bool)
    )
    clicks = []
    for coords, positive in zip(np.asarray(points.data, dtype=np.float64), signs):
        z, x, y = point_to_pixel(coords)
        clicks.append(ClickPoint(z, x, y, bool(positive)))
    return clicks


def _plane(labels: Labels, slice_index: SliceKey) -> np.ndarray:
    data = labels.data
    return np.asarray(data if slice_index is None else data[slice_index])


def _full_index(slice_index: SliceKey, rows: np.ndarray, cols: np.ndarray) -> tuple:
    if slice_index is None:
        return rows, cols
    return np.full(rows.shape, slice_index, dtype=np.intp), rows, cols


def write_object_mask(
    labels: Labels, object_id: int, mask: np.ndarray, slice_index: SliceKey, overwrite: bool
) -> int:
    """Make ``mask`` (H, W) bool the object's pixels on one slice, as one undoable edit.

    Pixels of the object outside ``mask`` return to background; pixels of other objects stay
    theirs unless ``overwrite``. Returns the number of changed pixels.
    """
    plane = _plane(labels, slice_index)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != plane.shape:
        raise ValueError(f"mask shape {mask.shape} does not match the labels slice {plane.shape}")
    mine = plane == object_id
    target = mask if overwrite else mask & ((plane == 0) | mine)
    changed = target != mine
    if not changed.any():
        return 0
    rows, cols = np.nonzero(changed)
    values = np.where(target[rows, cols], object_id, 0).astype(labels.data.dtype)
    labels.data_setitem(_full_index(slice_index, rows, cols), values)
    return int(rows.size)


def erase_object(labels: Labels, object_id: int, slice_index: SliceKey = None) -> int:
    """Set the object's pixels (on one slice, or everywhere) to background, as one undoable edit.

    Masks not in memory (a zarr store) are searched one slice at a time, one edit per slice
    that holds the object: the caller groups them into one undo step (``block_history``).
    """
    data = labels.data
    if slice_index is None and not isinstance(data, np.ndarray) and len(data.shape) == 3:
        return sum(erase_object(labels, object_id, z) for z in range(data.shape[0]))
    if slice_index is None:
        indices = np.nonzero(np.asarray(data) == object_id)
    else:
        rows, cols = np.nonzero(_plane(labels, slice_index) == object_id)
        indices = _full_index(slice_index, rows, cols)
    if indices[0].size == 0:
        return 0
    labels.data_setitem(indices, 0)
    return int(indices[0].size)


class UndoGroup:
    """Gathers the edits of a long run (a propagation) into one undo step.

    Wraps ``Labels.block_history``: edits made between :meth:`open` and :meth:`close`, even across
    event-loop turns, are committed together when the group closes. The owner sets ``written``
    after each edit, so that a failed run can be taken back as a whole (``close(roll_back=True)``).
    """

    def __init__(self) -> None:
        self._stack: ExitStack | None = None
        self._labels: Labels | None = None
        self.written = False

    @property
    def is_open(self) -> bool:
        return self._stack is not None

    def open(self, labels: Labels) -> None:
        self.close()
        self._stack = ExitStack()
        self._stack.enter_context(labels.block_history())
        self._labels, self.written = labels, False

    def close(self, roll_back: bool = False) -> bool:
        """Commit the group as one undo step; with ``roll_back``, undo it at once (the layer is
        then as it was before :meth:`open`). Returns True when edits were taken back."""
        if self._stack is None:
            return False
        stack, labels = self._stack, self._labels
        self._stack = self._labels = None
        stack.close()
        if roll_back and self.written:
            labels.undo()
            return True
        return False
