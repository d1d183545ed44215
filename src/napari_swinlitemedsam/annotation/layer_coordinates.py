"""Boxes between napari rectangles and model pixel boxes: the one place where that frame changes.

napari puts pixel centres at integer data coordinates: pixel ``(row, col)`` covers
``[row - 0.5, row + 0.5] x [col - 0.5, col + 0.5]``. A rectangle therefore *covers* the pixels
whose centres lie inside it (borders included), so a rectangle drawn from pixel edge to pixel
edge covers exactly the pixels inside those edges.

The model side uses inclusive pixel boxes ``[x_min, y_min, x_max, y_max]`` (``x`` = column,
``y`` = row, ``x_max`` the last column of the object), as the challenge files do.

Rectangles are ``(4, ndim)`` arrays of vertices in napari data coordinates, last two axes
``(row, col)``; for a stack (``ndim == 3``) the first axis is the slice index ``z``.
Nothing here imports napari: the functions take and return plain arrays.
"""

from __future__ import annotations

import math

import numpy as np

MIN_BOX_SIDE = 3
"""Pixels a box must cover along each axis to become an object: napari turns a click without
dragging into a rectangle about 2.5 screen pixels wide, which would give an object of a speck."""


class RectangleError(ValueError):
    """A rectangle cannot be turned into a pixel box (wrong shape, non-finite, off the image,
    too small)."""


def rectangle_to_box(
    vertices: np.ndarray, image_shape: tuple[int, int] | None = None
) -> tuple[int | None, np.ndarray]:
    """Turn a napari rectangle into ``(slice_index, box)``.

    Args:
        vertices: (V, ndim) vertices in data coordinates, ``ndim`` 2 (``[row, col]``) or 3
            (``[z, row, col]``). Any vertex order; a rotated rectangle gives its bounding box.
        image_shape: optional ``(H, W)``; when given the box is clipped to the image and a
            rectangle wholly outside it raises :class:`RectangleError`.

    Returns:
        ``slice_index``: the nearest integer ``z`` for a 3D rectangle, ``None`` for 2D.
        ``box``: (4,) int64 ``[x_min, y_min, x_max, y_max]``, inclusive pixel indices of the
        pixels whose centres lie inside the rectangle. A rectangle too thin to hold any pixel
        centre along an axis gives the single pixel nearest to its middle along that axis.
    """
    array = np.asarray(vertices, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] < 2 or array.shape[1] not in (2, 3):
        raise RectangleError(
            f"a rectangle must be (V, 2) [row, col] or (V, 3) [z, row, col] vertices, "
            f"got shape {array.shape}"
        )
    if not np.isfinite(array).all():
        raise RectangleError("the rectangle has NaN or infinite vertices; redraw it")
    slice_index = None
    if array.shape[1] == 3:
        slice_index = math.floor(float(np.mean(array[:, 0])) + 0.5)
    rows, cols = array[:, -2], array[:, -1]
    y_min, y_max = _covered_range(rows.min(), rows.max())
    x_min, x_max = _covered_range(cols.min(), cols.max())
    box = np.array([x_min, y_min, x_max, y_max], dtype=np.int64)
    if image_shape is not None:
        box = clip_box(box, image_shape)
    return slice_index, box


def _covered_range(low: float, high: float) -> tuple[int, int]:
    """First and last integer in ``[low, high]``, or the integer nearest the middle if none."""
    first, last = math.ceil(low), math.floor(high)
    if first > last:
        first = last = math.floor((low + high) / 2 + 0.5)
    return int(first), int(last)


def point_to_pixel(coords: np.ndarray) -> tuple[int | None, float, float]:
    """A napari point ``[row, col]`` or ``[z, row, col]`` (data coordinates) as the model's
    ``(slice_index, x, y)``: ``x`` = column and ``y`` = row (pixel centres at integers, so no
    shift), ``slice_index`` the nearest slice of a stack, ``None`` in 2D."""
    values = np.asarray(coords, dtype=np.float64).reshape(-1)
    if values.size not in (2, 3):
        raise RectangleError(f"a point must be [row, col] or [z, row, col], got {values.tolist()}")
    slice_index = math.floor(values[0] + 0.5) if values.size == 3 else None
    return slice_index, float(values[-1]), float(values[-2])


def clip_box(box: np.ndarray, image_shape: tuple[int, int]) -> np.ndarray:
    """Clip an inclusive (4,) xyxy box to an ``(H, W)`` image; raise if it misses the image."""
    height, width = int(image_shape[0]), int(image_shape[1])
    x_min, y_min, x_max, y_max = (int(v) for v in box)
    if x_max < 0 or y_max < 0 or x_min > width - 1 or y_min > height - 1:
        raise RectangleError(
            f"the box [{x_min}, {y_min}, {x_max}, {y_max}] lies outside the {height}x{width} "
            "image; draw it on the image"
        )
    return np.array(
        [max(x_min, 0), max(y_min, 0), min(x_max, width - 1), min(y_max, height - 1)],
        dtype=np.int64,
    )


def check_box_size(box: np.ndarray, min_side: int = MIN_BOX_SIDE) -> np.ndarray:
    """Return the inclusive (4,) xyxy ``box`` unchanged, or raise :class:`RectangleError` when it
    covers fewer than ``min_side`` pixels along either axis (a click rather than a box)."""
    x_min, y_min, x_max, y_max = (int(v) for v in box)
    width, height = x_max - x_min + 1, y_max - y_min + 1
    if min(width, height) < min_side:
        raise RectangleError(
            f"the box covers {width}x{height} pixels, less than {min_side} on a side (a click "
            "without dragging?); drag from corner to corner to draw a box around the object"
        )
    return box


def box_to_rectangle(box: np.ndarray, slice_index: int | None = None) -> np.ndarray:
    """The napari rectangle, edge to edge, of an inclusive ``[x_min, y_min, x_max, y_max]`` box.

    Returns (4, 2) ``[row, col]`` vertices, or (4, 3) ``[z, row, col]`` when ``slice_index`` is
    given, in the order top-left, top-right, bottom-right, bottom-left.
    :func:`rectangle_to_box` of the result gives ``(slice_index, box)`` back.
    """
    values = np.asarray(box, dtype=np.float64).reshape(-1)
    if values.size != 4 or not np.isfinite(values).all():
        raise RectangleError(
            f"a box must be 4 finite numbers [x_min, y_min, x_max, y_max], got {box!r}"
        )
    x_min, y_min, x_max, y_max = values
    if x_min > x_max or y_min > y_max:
        raise RectangleError(f"the box {values.tolist()} has its minimum corner beyond its maximum")
    top, bottom = y_min - 0.5, y_max + 0.5
    left, right = x_min - 0.5, x_max + 0.5
    corners = np.array([[top, left], [top, right], [bottom, right], [bottom, left]])
    if slice_index is None:
        return corners
    return np.column_stack([np.full(4, float(slice_index)), corners])


def boxes_3d_to_rectangles(boxes: np.ndarray) -> list[np.ndarray]:
    """Challenge 3D boxes (N, 6) ``[x_min, y_min, z_min, x_max, y_max, z_max]`` to rectangles.

    Each box becomes one (4, 3) rectangle on its middle slice ``(z_min + z_max) // 2`` (the slice
    that 3D propagation starts from).
    """
    array = np.asarray(boxes, dtype=np.float64).reshape(-1, 6)
    rectangles = []
    for x_min, y_min, z_min, x_max, y_max, z_max in array:
        middle = int((z_min + z_max) // 2)
        rectangles.append(box_to_rectangle([x_min, y_min, x_max, y_max], slice_index=middle))
    return rectangles


def pixels_covered(box: np.ndarray, image_shape: tuple[int, int]) -> np.ndarray:
    """(H, W) bool mask of the pixels of an inclusive xyxy box (for tests and previews)."""
    mask = np.zeros(image_shape, dtype=bool)
    x_min, y_min, x_max, y_max = (int(v) for v in clip_box(box, image_shape))
    mask[y_min : y_max + 1, x_min : x_max + 1] = True
    return mask


def spacing_to_layer_scale(spacing: np.ndarray | None, ndim: int) -> tuple[float, ...] | None:
    """A napari layer ``scale`` (one value per array axis) from a challenge file's ``spacing``.

    3D challenge files written from SimpleITK store spacing in ``(x, y, z)`` order while their
    arrays are ``(D, H, W)``; others store ``(z, y, x)``. When the first two values are equal
    and the third differs (equal in-plane spacing, the usual case) the order is taken to be
    ``(x, y, z)`` and reversed; otherwise the values are used as stored. 2D images get no scale
    (``None``), as do missing or unusable spacings.
    """
    if spacing is None or ndim != 3:
        return None
    values = np.asarray(spacing, dtype=np.float64).reshape(-1)
    if values.size != 3 or not np.isfinite(values).all() or (values <= 0).any():
        return None
    if values[0] == values[1] and values[2] != values[0]:
        values = values[::-1]
    return tuple(float(v) for v in values)
