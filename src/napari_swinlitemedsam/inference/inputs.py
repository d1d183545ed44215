"""What the predictor accepts: 2D images as the encoder's uint8 input, boxes checked and clipped.

Kept apart from :mod:`.predictor` (which re-exports these names) so that the predictor module is
the encode/decode engine alone. Boxes are ``(N, 4)`` ``[x_min, y_min, x_max, y_max]`` in original
pixels, inclusive.
"""

from __future__ import annotations

import numpy as np

from napari_swinlitemedsam.inference import intensity, transforms


class PredictorError(ValueError):
    """The predictor was used wrongly (no image set, bad boxes, bad image)."""


def check_boxes(boxes: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """Validate (N, 4) xyxy boxes in original pixels and return them as float64.

    Inverted corners are swapped; boxes partly outside are clipped to the image; NaN/inf
    coordinates and boxes wholly outside the image raise :class:`PredictorError`.
    """
    array = np.asarray(boxes, dtype=np.float64)
    if array.ndim == 1 and array.size == 4:
        array = array[None]
    if array.ndim != 2 or array.shape[1] != 4:
        raise PredictorError(
            "boxes must be an (N, 4) array of [x_min, y_min, x_max, y_max], "
            f"got shape {array.shape}"
        )
    if not np.isfinite(array).all():
        bad = np.flatnonzero(~np.isfinite(array).all(axis=1)).tolist()
        raise PredictorError(f"boxes {bad} have NaN or infinite coordinates; redraw them")
    height, width = image_size
    x0 = np.minimum(array[:, 0], array[:, 2])
    x1 = np.maximum(array[:, 0], array[:, 2])
    y0 = np.minimum(array[:, 1], array[:, 3])
    y1 = np.maximum(array[:, 1], array[:, 3])
    outside = (x1 < 0) | (y1 < 0) | (x0 > width - 1) | (y0 > height - 1)
    if outside.any():
        raise PredictorError(
            f"boxes {np.flatnonzero(outside).tolist()} lie wholly outside the {height}x{width} "
            "image; draw them on the image"
        )
    clipped = np.stack(
        [
            np.clip(x0, 0, width - 1),
            np.clip(y0, 0, height - 1),
            np.clip(x1, 0, width - 1),
            np.clip(y1, 0, height - 1),
        ],
        axis=1,
    )
    return clipped


def model_input_uint8(image: np.ndarray) -> np.ndarray:
    """An (H, W) grey or (H, W, 3) RGB uint8 image for the encoder, from any 2D input.

    Grey stays one channel (``prepare_image`` treats it as three equal channels after the
    resize, which saves memory on large images); RGBA loses its alpha. Raises
    :class:`PredictorError` for shapes and dtypes that are not a 2D image.
    """
    array = np.asarray(image)
    if array.ndim < 2 or min(array.shape[:2]) == 0:
        raise PredictorError(f"expected a 2D image (H, W) or (H, W, 3), got shape {array.shape}")
    try:
        if array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 1):
            return intensity.to_uint8(array.reshape(array.shape[:2]))
        return intensity.to_rgb_uint8(array)
    except (TypeError, ValueError) as error:
        raise PredictorError(str(error)) from None


def clicks_to_256(
    points: np.ndarray, labels: np.ndarray | None, count: int, original_size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Check (N=count, P, 2) ``[x, y]`` clicks in original pixels and their (N, P) labels
    (1 = add, 0 = remove); return them in the 256 frame with int64 labels."""
    xy = np.asarray(points, dtype=np.float64)
    if xy.ndim != 3 or xy.shape[0] != count or xy.shape[2] != 2:
        raise PredictorError(f"points must be (N={count}, P, 2) [x, y], got {xy.shape}")
    if labels is None:
        raise PredictorError("point_labels (N, P) are needed with points (1 = add, 0 = remove)")
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != xy.shape[:2]:
        raise PredictorError(f"point_labels must be {xy.shape[:2]}, got {labels.shape}")
    if not np.isfinite(xy).all():
        raise PredictorError("points have NaN or infinite coordinates")
    return transforms.points_to_256(xy, original_size), labels
