"""The extra prompts Swin-LiteMedSAM derives from a box: four points and one scribble.

Swin-LiteMedSAM's inference does not ask the user for points or scribbles; it samples them
inside the box, on the image's foreground, and feeds them to the decoder with the box. This
module samples them the same way, in the 256 frame (see :mod:`.transforms`).

*Foreground* is every frame pixel whose channel mean is > 0: in the normalised, padded
encoder input that is every pixel above the image's minimum, and never the padding.

Points (:func:`box_points`)
    The box is shrunk on the left and right by one random amount in ``[w/5, w/2 - 2]`` and
    at the top and bottom by one in ``[h/5, h/2 - 2]`` (no shrink when that range is empty);
    it is split into quadrants at the *original* box centre. In each quadrant, taken in the
    order top-left, bottom-left, bottom-right, top-right, the point's x is the column of a
    random foreground pixel of the quadrant and its y the row of another, independently
    drawn one (as the reference does, so the point lies in the quadrant but need not be
    foreground itself). A quadrant without foreground gives the box centre.
Scribble (:func:`box_scribble`)
    The box is shrunk by random amounts in ``[w/8, w/6)`` and ``[h/8, h/6)`` per side and
    intersected with the foreground. A random-walk stroke starts on a random pixel of that
    region: 10-29 further vertices, head speed <= 20 px per step, speed changes up to +-15
    and heading changes up to +-0.5 rad per step, a brush 3-9 px wide; the whole stroke is
    then shifted by a small random velocity and half of its vertices are jittered by up to
    3 px. The stroke, cut to the region, keeps its largest 8-connected component if that
    has more than 5 pixels; otherwise it is drawn again, 6 times at most, and the scribble is
    empty if none succeeds (also when the region is empty).

All random numbers come from one random source (:mod:`.prompt_random`), in the reference's
order: points first, then the scribble, when both are drawn from the same ``rng``. With
:class:`~.prompt_random.ReferenceRandomSource` seeded like the reference, the output equals
the reference's prompts exactly. Strokes are rasterised with Pillow's ``ImageDraw``, the
rasteriser the reference uses, so that they match pixel for pixel.

Boxes are ``[x_min, y_min, x_max, y_max]`` in the 256 frame; coordinates outside
``[0, 256]`` are clipped first (the reference would index with negative numbers instead).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from napari_swinlitemedsam.inference.prompt_random import (
    RandomSource,
    as_random_source,
    prompt_rng,
)  # prompt_rng re-exported
from napari_swinlitemedsam.model.registry import PROMPTS_BOX_POINTS_SCRIBBLE

__all__ = ["box_points", "box_scribble", "foreground_map", "prompt_rng"]

FRAME_SIZE = 256

# Stroke parameters of the reference's "rand_curve" preset.
_VERTEX_COUNT_RANGE = (10, 30)  # half-open
_MAX_HEAD_SPEED = 20.0
_MAX_SPEED_CHANGE = 15.0
_MAX_HEADING_CHANGE = 0.5
_BRUSH_WIDTH_RANGE = (3, 10)  # half-open
_LINE_SPEED_SCALE = 3.0  # |N(0, 3)| px: the whole stroke's shift
_LINE_SPEED_CHANGE_SCALE = 2.5  # drawn and discarded, to keep the reference's sequence
_LINE_HEADING_CHANGE_SCALE = 0.25  # drawn and discarded, likewise
_MOVED_VERTEX_FRACTION = 0.5
_MAX_VERTEX_JITTER = 3
_MAX_ATTEMPTS = 6
_MIN_SCRIBBLE_PIXELS = 5  # the kept component must have more pixels than this


def foreground_map(image_256: np.ndarray) -> np.ndarray:
    """(256, 256) bool foreground: channel mean > 0 of a (3, 256, 256) encoder input, or
    ``> 0`` of a (256, 256) map."""
    image_256 = np.asarray(image_256)
    if image_256.shape == (3, FRAME_SIZE, FRAME_SIZE):
        return image_256.mean(axis=0, dtype=np.float64) > 0
    if image_256.shape == (FRAME_SIZE, FRAME_SIZE):
        return image_256 > 0
    raise ValueError(
        "Expected the (3, 256, 256) encoder input or a (256, 256) foreground map, "
        f"got shape {image_256.shape}."
    )


def quadrants(
    top: int, bottom: int, left: int, right: int, mid_y: int, mid_x: int
) -> list[tuple[int, int, int, int]]:
    """The four quadrants of a box split at ``(mid_x, mid_y)``, as half-open
    ``(row_start, row_stop, col_start, col_stop)`` in the order top-left, bottom-left,
    bottom-right, top-right (the order of the point prompts in training and inference)."""
    return [
        (top, mid_y, left, mid_x),
        (mid_y, bottom, left, mid_x),
        (mid_y, bottom, mid_x, right),
        (top, mid_y, mid_x, right),
    ]


def box_points(box_256, image_256: np.ndarray, rng) -> np.ndarray:
    """Four positive points sampled in the box's quadrants.

    Parameters
    ----------
    box_256 : (4,) or (1, 4) xyxy box in the frame.
    image_256 : (3, 256, 256) encoder input or (256, 256) foreground map.
    rng : numpy.random.Generator (e.g. from :func:`prompt_rng`) or a random source.

    Returns
    -------
    (4, 2) float32 ``[x, y]`` (whole numbers), quadrants in the order top-left, bottom-left,
    bottom-right, top-right.
    """
    foreground = foreground_map(image_256)
    source = as_random_source(rng)
    x_min, y_min, x_max, y_max = _frame_box(box_256)
    shift_x = _random_shift(source, int((x_max - x_min) / 5), int(2 * (x_max - x_min) / 4) - 1)
    shift_y = _random_shift(source, int((y_max - y_min) / 5), int(2 * (y_max - y_min) / 4) - 1)
    mid_x, mid_y = int((x_min + x_max) // 2), int((y_min + y_max) // 2)
    left, right = int(x_min + shift_x), int(x_max - shift_x)
    top, bottom = int(y_min + shift_y), int(y_max - shift_y)
    points = []
    for row_start, row_stop, col_start, col_stop in quadrants(
        top, bottom, left, right, mid_y, mid_x
    ):
        rows, cols = np.nonzero(foreground[row_start:row_stop, col_start:col_stop])
        if rows.size == 0:
            points.append((mid_x, mid_y))
            continue
        x = col_start + int(cols[source.pick(cols.size)])
        y = row_start + int(rows[source.pick(rows.size)])
        points.append((x, y))
    return np.array(points, dtype=np.float32)


def box_scribble(box_256, image_256: np.ndarray, rng) -> np.ndarray:
    """A random scribble inside the box, on the foreground.

    Parameters
    ----------
    box_256 : (4,) or (1, 4) xyxy box in the frame.
    image_256 : (3, 256, 256) encoder input or (256, 256) foreground map.
    rng : numpy.random.Generator (e.g. from :func:`prompt_rng`) or a random source.

    Returns
    -------
    (256, 256) float32 map of 0/1 (row = y), all zeros when no scribble could be drawn.
    """
    foreground = foreground_map(image_256)
    source = as_random_source(rng)
    x_min, y_min, x_max, y_max = _frame_box(box_256)
    shift_x = _random_shift(source, int((x_max - x_min) / 8), int((x_max - x_min) / 6))
    shift_y = _random_shift(source, int((y_max - y_min) / 8), int((y_max - y_min) / 6))
    left, right = int(x_min + shift_x), int(x_max - shift_x)
    top, bottom = int(y_min + shift_y), int(y_max - shift_y)
    region = np.zeros((FRAME_SIZE, FRAME_SIZE), dtype=bool)
    region[top:bottom, left:right] = foreground[top:bottom, left:right]
    return _scribble_in_region(region, source).astype(np.float32)


def _scribble_in_region(region: np.ndarray, source: RandomSource) -> np.ndarray:
    """Largest component of a random stroke cut to ``region``; empty after 6 failures."""
    candidates = np.flatnonzero(region)
    if candidates.size == 0:
        return np.zeros(region.shape, dtype=bool)
    for attempt in range(_MAX_ATTEMPTS + 1):
        start = int(candidates[source.pick_start_pixel(candidates.size)])
        stroke = _random_stroke(start % FRAME_SIZE, start // FRAME_SIZE, source)
        if attempt == _MAX_ATTEMPTS:
            break  # the reference draws one stroke more before giving up
        cut = stroke & region
        if not cut.any():
            continue
        largest = _largest_component(cut)
        if largest.sum() > _MIN_SCRIBBLE_PIXELS:
            return largest
    return np.zeros(region.shape, dtype=bool)


def _random_stroke(start_x: int, start_y: int, source: RandomSource) -> np.ndarray:
    """(256, 256) bool: one random-walk stroke from (start_x, start_y), moved once."""
    brush_width = source.integer(*_BRUSH_WIDTH_RANGE)
    vertex_count = source.integer(*_VERTEX_COUNT_RANGE)
    heading = source.uniform(0, 2 * np.pi)
    speed = source.uniform(0, _MAX_HEAD_SPEED)
    xs, ys = [float(start_x)], [float(start_y)]
    for _ in range(vertex_count):
        speed += source.uniform(-_MAX_SPEED_CHANGE, _MAX_SPEED_CHANGE)
        heading += source.uniform(-_MAX_HEADING_CHANGE, _MAX_HEADING_CHANGE)
        speed = np.clip(speed, 0, _MAX_HEAD_SPEED)
        # x follows the sine and y the cosine of the heading, as in the reference.
        xs.append(xs[-1] + speed * np.sin(heading))
        ys.append(ys[-1] + speed * np.cos(heading))
    line_speed = abs(source.normal(_LINE_SPEED_SCALE))
    line_heading = source.uniform(0, 2 * np.pi)
    source.normal(_LINE_SPEED_CHANGE_SCALE)
    source.normal(_LINE_HEADING_CHANGE_SCALE)
    moved_x = np.array(xs) + int(line_speed * np.cos(line_heading))
    moved_y = np.array(ys) + int(line_speed * np.sin(line_heading))
    order = source.permutation(len(xs))
    for index in order[: int(len(xs) * _MOVED_VERTEX_FRACTION)]:
        moved_x[index] += source.integer(-_MAX_VERTEX_JITTER, _MAX_VERTEX_JITTER)
        moved_y[index] += source.integer(-_MAX_VERTEX_JITTER, _MAX_VERTEX_JITTER)
    return _rasterise_stroke(moved_x, moved_y, brush_width)


def _rasterise_stroke(xs: np.ndarray, ys: np.ndarray, brush_width: int) -> np.ndarray:
    """Draw the polyline with round vertex caps; (256, 256) bool, True on the stroke."""
    canvas = Image.new("1", (FRAME_SIZE, FRAME_SIZE), 0)
    draw = ImageDraw.Draw(canvas)
    for index in range(1, len(xs)):
        segment = (xs[index - 1], ys[index - 1], xs[index], ys[index])
        draw.line(segment, fill=1, width=brush_width)
    radius = brush_width // 2 - 1
    for x, y in zip(xs, ys):
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=1)
    return np.array(canvas, dtype=bool)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component (the first in raster order on a tie)."""
    # Imported here: scipy.ndimage costs a noticeable part of a new process's start-up, and
    # only Swin-LiteMedSAM's scribbles need it (the default LiteMedSAM never gets here).
    from scipy import ndimage

    labels, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if count <= 1:
        return labels == 1
    sizes = np.bincount(labels.ravel())[1:]
    return labels == int(np.argmax(sizes)) + 1


def _random_shift(source: RandomSource, low: int, high: int) -> int:
    """A shrink amount in ``[low, high)``, or 0 without drawing when the range is empty."""
    return source.integer(low, high) if low < high else 0


def _frame_box(box_256) -> tuple:
    """The four box coordinates as Python numbers, clipped to [0, 256]."""
    values = np.asarray(box_256).reshape(-1)
    if values.size != 4:
        raise ValueError(
            f"Expected one xyxy box with 4 coordinates, got shape {np.shape(box_256)}."
        )
    if np.issubdtype(values.dtype, np.integer):
        return tuple(min(max(int(value), 0), FRAME_SIZE) for value in values)
    values = values.astype(np.float64)
    if not np.isfinite(values).all():
        raise ValueError("Box coordinates must be finite numbers.")
    return tuple(min(max(float(value), 0.0), float(FRAME_SIZE)) for value in values)


def decoder_prompts(
    scheme: str,
    boxes_256: np.ndarray,
    image_256: np.ndarray,
    slice_index: int,
    extra_points: tuple[np.ndarray, np.ndarray] | None,
    prompt_source: RandomSource | None = None,
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """The decoder's prompts besides the (N, 4) boxes: points (N, P, 2), labels (N, P) and
    scribbles (N, 1, 256, 256), each None when absent.

    ``scheme`` ``PROMPTS_BOX_POINTS_SCRIBBLE`` (Swin-LiteMedSAM) derives 4 points and a scribble
    from every box (seeded by the box and ``slice_index``, or drawn in order from
    ``prompt_source``); ``extra_points`` (``(N, P, 2)`` xy in the 256 frame, ``(N, P)`` labels:
    the user's clicks) are appended after them.
    """
    points = labels = scribbles = None
    if scheme == PROMPTS_BOX_POINTS_SCRIBBLE:
        generated, strokes = [], []
        for box in boxes_256:
            rng = prompt_source if prompt_source is not None else prompt_rng(box, slice_index)
            generated.append(box_points(box, image_256, rng))
            strokes.append(box_scribble(box, image_256, rng))
        points = np.stack(generated).astype(np.float32)
        labels = np.ones(points.shape[:2], dtype=np.int64)
        scribbles = np.stack(strokes).astype(np.float32)[:, None]
    if extra_points is not None:
        extra_xy, extra_labels = extra_points
        points = extra_xy if points is None else np.concatenate([points, extra_xy], axis=1)
        labels = extra_labels if labels is None else np.concatenate([labels, extra_labels], axis=1)
    return points, labels, scribbles
