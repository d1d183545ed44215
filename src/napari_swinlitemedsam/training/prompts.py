"""Train-time prompts, drawn from the ground truth (they differ from inference-time prompts).

At inference, Swin-LiteMedSAM derives its points and scribble from the image inside the box
(:mod:`..box_prompts`). During training the published recipe derives them from the object's
ground-truth mask, in the 256 frame:

* **box**: the tight box of the mask, each side pushed out by its own random 0..5 px
  (clipped to the frame): ``[x_min, y_min, x_max, y_max]``;
* **points**: the box is split into quadrants at its centre (top-left, bottom-left,
  bottom-right, top-right, half-open ranges); each quadrant gives one random ground-truth pixel
  of that quadrant, or the box centre when the quadrant holds none. (The published code drew a
  point's x and y from two independent pixels; here both come from the same pixel, so every
  point lies on the object, as the recipe describes.) All four points are positive;
* **scribble**: a random stroke inside the box (not restricted to the object), drawn with the
  same stroke generator as at inference, over the box rectangle.

All randomness comes from the ``numpy.random.Generator`` passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_swinlitemedsam.inference.box_prompts import box_scribble, quadrants

FRAME_SIZE = 256
MAX_BOX_ENLARGEMENT = 5


@dataclass(frozen=True)
class TrainingPrompts:
    """Prompts for one object in the 256 frame.

    Attributes:
        box: (4,) float32 xyxy.
        points: (4, 2) float32 ``[x, y]``, quadrant order TL, BL, BR, TR.
        point_labels: (4,) int64, all 1.
        scribble: (256, 256) float32 0/1, row = y.
    """

    box: np.ndarray
    points: np.ndarray
    point_labels: np.ndarray
    scribble: np.ndarray


def tight_box(mask: np.ndarray) -> np.ndarray:
    """(4,) int64 inclusive xyxy box of a non-empty (H, W) mask; ValueError when it is empty."""
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        raise ValueError("cannot build a box around an empty mask")
    return np.array([cols.min(), rows.min(), cols.max(), rows.max()], dtype=np.int64)


def enlarged_box(
    mask: np.ndarray, rng: np.random.Generator, max_enlargement: int = MAX_BOX_ENLARGEMENT
) -> np.ndarray:
    """The mask's tight box with each side moved out by an independent 0..max px, clipped."""
    x_min, y_min, x_max, y_max = tight_box(mask)
    height, width = mask.shape
    grow = rng.integers(0, max_enlargement + 1, size=4)
    return np.array(
        [
            max(0, x_min - grow[0]),
            max(0, y_min - grow[1]),
            min(width, x_max + grow[2]),
            min(height, y_max + grow[3]),
        ],
        dtype=np.float32,
    )


def quadrant_points(mask: np.ndarray, box: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(4, 2) float32 points: one random object pixel per box quadrant (TL, BL, BR, TR)."""
    x_min, y_min, x_max, y_max = (int(v) for v in box)
    mid_x, mid_y = (x_min + x_max) // 2, (y_min + y_max) // 2
    points = []
    for top, bottom, left, right in quadrants(y_min, y_max, x_min, x_max, mid_y, mid_x):
        rows, cols = np.nonzero(mask[top:bottom, left:right])
        if rows.size == 0:
            points.append((mid_x, mid_y))
            continue
        pick = int(rng.integers(rows.size))
        points.append((left + int(cols[pick]), top + int(rows[pick])))
    return np.array(points, dtype=np.float32)


def box_region_scribble(box: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(256, 256) float32 scribble drawn inside ``box`` (over the whole box rectangle)."""
    region = np.zeros((FRAME_SIZE, FRAME_SIZE), dtype=bool)
    x_min, y_min, x_max, y_max = (int(v) for v in box)
    region[y_min:y_max, x_min:x_max] = True
    return box_scribble(box, region, rng)


def training_prompts(
    mask_256: np.ndarray, rng: np.random.Generator, with_points_and_scribble: bool = True
) -> TrainingPrompts:
    """All train-time prompts for one (256, 256) object mask (see the module docstring).

    Without ``with_points_and_scribble`` (box-only models such as LiteMedSAM) the points are
    empty (0, 2) and the scribble is all zeros.
    """
    mask_256 = np.asarray(mask_256) > 0
    box = enlarged_box(mask_256, rng)
    if not with_points_and_scribble:
        return TrainingPrompts(
            box,
            np.zeros((0, 2), np.float32),
            np.zeros(0, np.int64),
            np.zeros((FRAME_SIZE, FRAME_SIZE), np.float32),
        )
    points = quadrant_points(mask_256, box, rng)
    scribble = box_region_scribble(box, rng)
    return TrainingPrompts(box, points, np.ones(4, dtype=np.int64), scribble)
