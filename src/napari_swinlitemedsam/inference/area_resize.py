"""Area-interpolation resize of uint8 images, numerically equal to OpenCV's ``INTER_AREA``.

Both reference inference scripts resize every image (and, in 3D, every propagated mask) with
``cv2.resize(..., interpolation=cv2.INTER_AREA)``. This module reproduces that function for
uint8 data without depending on OpenCV, including its rounding, so the encoder input is the
same to the last bit.

OpenCV's ``INTER_AREA`` is three different algorithms, chosen from the scale factors
``scale = source_size / target_size`` (computed as ``1 / (target / source)`` in double):

* **Integer downscale** in both axes ("fast area"): the mean of each ``kx * ky`` block.
  A 2x2 block is rounded half up with integers, ``(sum + 2) >> 2``; other block sizes are
  ``float32(sum) * float32(1 / area)`` rounded half to even.
* **Non-integer downscale** (both scales >= 1): every target pixel is the area-weighted mean
  of the source pixels its footprint covers. Weights are float32, and the sums run in
  float32 in a fixed order (first along x, then along y), rounded half to even at the end.
* **Upscale** (any scale < 1): a bilinear-like interpolation whose weights come from the
  overlap of pixel cells (a target pixel that lies inside one source cell copies it), in
  11-bit fixed point, with OpenCV's truncating vertical blend (see
  :func:`_vertical_fixed_point`).

Axis order: images are ``(H, W)`` or ``(H, W, C)``, rows first.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["resize_area"]

_COEF_BITS = 11
_COEF_SCALE = 1 << _COEF_BITS  # 2048, OpenCV's INTER_RESIZE_COEF_SCALE


def resize_area(image: np.ndarray, new_height: int, new_width: int) -> np.ndarray:
    """Resize a uint8 image like ``cv2.resize(image, (new_width, new_height), INTER_AREA)``.

    Parameters
    ----------
    image : (H, W) or (H, W, C) uint8 array
    new_height, new_width : positive target size in pixels.

    Returns
    -------
    (new_height, new_width) or (new_height, new_width, C) uint8 array (a new array).
    """
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise TypeError(
            f"resize_area expects a uint8 image, got {image.dtype}; convert it with "
            "intensity.to_uint8 first."
        )
    if image.ndim not in (2, 3):
        raise ValueError(
            f"resize_area expects an (H, W) or (H, W, C) image, got shape {image.shape}."
        )
    height, width = image.shape[:2]
    new_height, new_width = int(new_height), int(new_width)
    if min(height, width) < 1 or min(new_height, new_width) < 1:
        raise ValueError(
            f"Cannot resize from {height}x{width} to {new_height}x{new_width}: "
            "every size must be at least one pixel."
        )
    if (height, width) == (new_height, new_width):
        return image.copy()

    pixels = image if image.ndim == 3 else image[:, :, None]
    inverse_x, inverse_y = new_width / width, new_height / height
    scale_x, scale_y = 1.0 / inverse_x, 1.0 / inverse_y
    if scale_x >= 1 and scale_y >= 1:
        block_x, block_y = round(scale_x), round(scale_y)
        if (
            abs(scale_x - block_x) < np.finfo(float).eps
            and abs(scale_y - block_y) < np.finfo(float).eps
        ):
            result = _block_mean(pixels, block_y, block_x)
        else:
            result = _area_weighted(pixels, new_height, new_width, scale_y, scale_x)
    else:
        result = _upscale_fixed_point(pixels, new_height, new_width, inverse_y, inverse_x)
    return result if image.ndim == 3 else result[:, :, 0]


def _block_mean(pixels: np.ndarray, block_y: int, block_x: int) -> np.ndarray:
    """Mean of non-overlapping ``block_y x block_x`` blocks of (H, W, C) uint8 pixels."""
    height, width, channels = pixels.shape
    blocks = pixels.reshape(height // block_y, block_y, width // block_x, block_x, channels)
    sums = blocks.sum(axis=(1, 3), dtype=np.int64)
    if block_x == 2 and block_y == 2 and channels in (1, 3, 4):
        return ((sums + 2) >> 2).astype(np.uint8)
    inverse_area = np.float32(1.0) / np.float32(block_x * block_y)
    return _round_to_uint8(sums.astype(np.float32) * inverse_area)


def _area_table(source: int, target: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-target-pixel source indices and float32 weights of one axis, in summation order.

    Returns ``(indices, weights)``, both ``(target, K)``; unused slots have weight 0 (adding
    ``0.0`` in float32 leaves a sum unchanged, so padding does not alter the result).
    """
    rows: list[list[tuple[int, float]]] = []
    for index in range(target):
        start = index * scale
        end = start + scale
        cell = min(scale, source - start)
        first = math.ceil(start)
        last = min(math.floor(end), source - 1)
        first = min(first, last)
        entries = []
        if first - start > 1e-3:
            entries.append((first - 1, (first - start) / cell))
        entries.extend((covered, 1.0 / cell) for covered in range(first, last))
        if end - last > 1e-3:
            entries.append((last, min(end - last, 1.0, cell) / cell))
        rows.append(entries)
    slots = max(len(entries) for entries in rows)
    indices = np.zeros((target, slots), dtype=np.intp)
    weights = np.zeros((target, slots), dtype=np.float32)
    for index, entries in enumerate(rows):
        for slot, (covered, weight) in enumerate(entries):
            indices[index, slot] = covered
            weights[index, slot] = np.float32(weight)
    return indices, weights


def _area_weighted(
    pixels: np.ndarray, new_height: int, new_width: int, scale_y: float, scale_x: float
) -> np.ndarray:
    """General downscale: float32 area weights, summed along x then along y."""
    height, width, _ = pixels.shape
    x_index, x_weight = _area_table(width, new_width, scale_x)
    y_index, y_weight = _area_table(height, new_height, scale_y)
    rows = np.zeros((height, new_width, pixels.shape[2]), dtype=np.float32)
    for slot in range(x_index.shape[1]):
        columns = np.take(pixels, x_index[:, slot], axis=1).astype(np.float32)
        rows += columns * x_weight[None, :, slot, None]
    total = np.zeros((new_height, new_width, pixels.shape[2]), dtype=np.float32)
    for slot in range(y_index.shape[1]):
        total += rows[y_index[:, slot]] * y_weight[:, slot, None, None]
    return _round_to_uint8(total)


def _linear_table(source: int, target: int, inverse: float) -> tuple[np.ndarray, np.ndarray]:
    """Left source index and the two 11-bit weights per target pixel for the upscale path."""
    scale = 1.0 / inverse
    left = np.empty(target, dtype=np.intp)
    weights = np.empty((target, 2), dtype=np.int64)
    for index in range(target):
        start = math.floor(index * scale)
        fraction = np.float32((index + 1) - (start + 1) * inverse)
        fraction = np.float32(0.0) if fraction <= 0 else fraction - np.float32(math.floor(fraction))
        if start >= source - 1:
            start, fraction = source - 1, np.float32(0.0)
        left[index] = start
        weights[index, 0] = np.rint((np.float32(1.0) - fraction) * np.float32(_COEF_SCALE))
        weights[index, 1] = np.rint(fraction * np.float32(_COEF_SCALE))
    return left, weights


def _upscale_fixed_point(
    pixels: np.ndarray, new_height: int, new_width: int, inverse_y: float, inverse_x: float
) -> np.ndarray:
    """Upscale path: fixed-point two-tap interpolation with cell-overlap weights."""
    height, width, channels = pixels.shape
    x_left, x_weight = _linear_table(width, new_width, inverse_x)
    y_top, y_weight = _linear_table(height, new_height, inverse_y)
    x_right = np.minimum(x_left + 1, width - 1)
    source = pixels.astype(np.int64)
    rows = (
        source[:, x_left, :] * x_weight[None, :, 0, None]
        + source[:, x_right, :] * x_weight[None, :, 1, None]
    )  # (H, new_width, C), weights sum to 2048
    y_bottom = np.minimum(y_top + 1, height - 1)
    upper = rows[y_top].reshape(new_height, new_width * channels)
    lower = rows[y_bottom].reshape(new_height, new_width * channels)
    result = _vertical_fixed_point(upper, lower, y_weight[:, 0:1], y_weight[:, 1:2])
    return result.reshape(new_height, new_width, channels)


def _vertical_fixed_point(
    upper: np.ndarray, lower: np.ndarray, weight_upper: np.ndarray, weight_lower: np.ndarray
) -> np.ndarray:
    """Blend two rows of 11-bit horizontal sums with 11-bit weights into uint8.

    OpenCV's vertical pass drops the low 4 bits of each horizontal sum, keeps the high 16
    bits of each product, adds the two and rounds away the last 2 bits. This is not the exact
    ``(a * wa + b * wb) / 2**22``: the two differ by one grey level at some pixels.
    """
    blended = (
        (((upper >> 4) * weight_upper) >> 16) + (((lower >> 4) * weight_lower) >> 16) + 2
    ) >> 2
    return np.clip(blended, 0, 255).astype(np.uint8)


def _round_to_uint8(values: np.ndarray) -> np.ndarray:
    """Round float32 values half to even and saturate to uint8 (OpenCV's saturate_cast)."""
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)
