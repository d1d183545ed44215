"""The 256 frame: the one place where images, boxes, masks and logits change coordinates.

Both models see every image in the *256 frame*:

1. the longer side is resized to 256 px keeping the aspect ratio,
   ``new = int(old * (256 / max(H, W)) + 0.5)``, with area interpolation
   (:func:`~napari_swinlitemedsam.inference.area_resize.resize_area`, equal to OpenCV's
   ``INTER_AREA``);
2. the resized uint8 image is min-max normalised to [0, 1] over all pixels and channels, in
   float64 (a constant image becomes all zeros);
3. it is zero-padded at the bottom and right to 256 x 256 and stored channels-first in
   float32. ``new_size = (new_h, new_w)`` is the unpadded part.

Boxes go into the frame coordinate by coordinate, ``int(c * 256 / max(H, W))`` (truncated, not
clipped). Decoder logits come back as ``(256, 256)`` maps: crop ``[:new_h, :new_w]``, then
bilinear interpolation (``align_corners=False``) to ``(H, W)``; a pixel is foreground when
``sigmoid(logit) > 0.5``. All of this reproduces the reference inference scripts bit for bit.

The intensity policy that brings any image to uint8 first lives in
:mod:`~napari_swinlitemedsam.inference.intensity`; :func:`to_uint8` and :func:`to_rgb_uint8`
are re-exported here.

Conventions: images ``(H, W)`` or ``(H, W, 3)`` uint8 (rows first); boxes ``(N, 4)`` xyxy
``[x_min, y_min, x_max, y_max]`` (x = column, y = row); sizes ``(height, width)``.
"""

from __future__ import annotations

import typing

import numpy as np
import torch
import torch.nn.functional as F

from napari_swinlitemedsam.inference.area_resize import resize_area
from napari_swinlitemedsam.inference.intensity import (
    to_rgb_uint8,
    to_uint8,
)  # the intensity policy, re-exported

__all__ = [
    "BOX_MARGIN_256",
    "FRAME_SIZE",
    "boxes_to_256",
    "coords_from_256",
    "frame_scale",
    "logits_to_masks",
    "logits_to_original",
    "longest_side_size",
    "mask_to_256",
    "mask_to_box_256",
    "pad_to_frame",
    "prepare_image",
    "resize_longest_side",
    "to_rgb_uint8",
    "to_uint8",
]

FRAME_SIZE = 256
#: Pixels added on each side of a propagated mask's box in the LiteMedSAM 3D loop.
BOX_MARGIN_256 = 3
_NORMALISATION_FLOOR = 1e-8


def frame_scale(original_size: tuple[int, int], target: int = FRAME_SIZE) -> float:
    """Factor from original pixels to the frame: ``target / max(H, W)``."""
    height, width = _check_size(original_size, "original_size")
    return target / max(height, width)


def longest_side_size(height: int, width: int, target: int = FRAME_SIZE) -> tuple[int, int]:
    """``(new_h, new_w)`` after resizing the longer side to ``target``, keeping the aspect.

    Each side is ``int(side * (target / max(H, W)) + 0.5)``, as in the reference. A side that
    would round to 0 (an image more than 512 times longer than wide) is kept at 1 pixel.
    """
    height, width = _check_size((height, width), "image size")
    scale = target * 1.0 / max(height, width)
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


def resize_longest_side(image: np.ndarray, target: int = FRAME_SIZE) -> np.ndarray:
    """Resize an (H, W) or (H, W, C) uint8 image so its longer side is ``target``."""
    image = np.asarray(image)
    new_height, new_width = longest_side_size(image.shape[0], image.shape[1], target)
    return resize_area(image, new_height, new_width)


def pad_to_frame(image: np.ndarray, target: int = FRAME_SIZE) -> np.ndarray:
    """Zero-pad (h, w) or (h, w, C) at the bottom and right to (target, target[, C])."""
    image = np.asarray(image)
    pad_rows, pad_cols = target - image.shape[0], target - image.shape[1]
    if pad_rows < 0 or pad_cols < 0:
        raise ValueError(f"Cannot pad an image of shape {image.shape} to {target} x {target}.")
    padding = [(0, pad_rows), (0, pad_cols)] + [(0, 0)] * (image.ndim - 2)
    return np.pad(image, padding)


def prepare_image(image: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """Build the encoder input of one 2D image.

    Parameters
    ----------
    image : (H, W) grey or (H, W, 3) RGB uint8 array (see ``intensity.to_rgb_uint8`` for
        other inputs). Grey is treated as three equal channels.

    Returns
    -------
    image_256 : (3, 256, 256) float32, channels first, values in [0, 1], zero padding.
    new_size : (new_h, new_w), the unpadded part of the frame.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or not (
        image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)
    ):
        raise ValueError(
            "prepare_image expects an (H, W) or (H, W, 3) uint8 image, got "
            f"{image.dtype} {image.shape}; convert it with intensity.to_rgb_uint8 first."
        )
    resized = resize_longest_side(image)
    new_height, new_width = resized.shape[:2]
    lowest = int(resized.min())
    span = max(float(int(resized.max()) - lowest), _NORMALISATION_FLOOR)
    normalised = (resized.astype(np.float64) - lowest) / span
    image_256 = np.zeros((3, FRAME_SIZE, FRAME_SIZE), dtype=np.float32)
    if normalised.ndim == 2:
        image_256[:, :new_height, :new_width] = normalised[None]
    else:
        image_256[:, :new_height, :new_width] = normalised.transpose(2, 0, 1)
    return image_256, (new_height, new_width)


def boxes_to_256(boxes: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
    """Boxes (or any coordinates) from original pixels into the frame, truncated.

    Parameters
    ----------
    boxes : (N, 4) or (4,) xyxy in original pixels (int or float).
    original_size : (H, W) of the original image.

    Returns
    -------
    int64 array of the same shape: ``int(c * 256 / max(H, W))`` per coordinate (truncation
    toward zero, no clipping), exactly as the reference scales boxes.
    """
    coords = np.asarray(boxes, dtype=np.float64)
    if not np.isfinite(coords).all():
        raise ValueError("Box coordinates must be finite numbers.")
    return np.trunc(coords * frame_scale(original_size)).astype(np.int64)


def points_to_256(points: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
    """Point prompts ``(..., 2)`` xy from original pixels into the frame, as float32 (points
    keep their fraction, unlike boxes: the prompt encoder takes them as they are)."""
    return (np.asarray(points, dtype=np.float64) * frame_scale(original_size)).astype(np.float32)


def coords_from_256(coords: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
    """Frame coordinates (boxes ``(N, 4)`` xyxy, points ``(N, 2)`` xy) back to original
    pixels, as float64. For display; the inverse of :func:`boxes_to_256` up to truncation."""
    return np.asarray(coords, dtype=np.float64) / frame_scale(original_size)


def logits_to_original(
    low_res_logits: np.ndarray | torch.Tensor,
    new_size: tuple[int, int],
    original_size: tuple[int, int],
) -> np.ndarray | torch.Tensor:
    """Bring decoder logits from the frame to the original image.

    Parameters
    ----------
    low_res_logits : (..., 256, 256) logits in the padded frame, e.g. (N, 256, 256) or
        (N, 1, 256, 256); numpy array or torch tensor (any device).
    new_size : (new_h, new_w) from :func:`prepare_image`.
    original_size : (H, W) of the original image.

    Returns
    -------
    (..., H, W) float32 logits: crop ``[:new_h, :new_w]``, then bilinear resize with
    ``align_corners=False`` (torch's kernel, as in the reference). Same kind (numpy / torch,
    device) as the input.
    """
    new_height, new_width = _check_size(new_size, "new_size")
    height, width = _check_size(original_size, "original_size")
    as_numpy = not isinstance(low_res_logits, torch.Tensor)
    logits = (
        torch.from_numpy(np.array(low_res_logits, dtype=np.float32))
        if as_numpy
        else typing.cast(torch.Tensor, low_res_logits)
    )
    if logits.ndim < 2 or new_height > logits.shape[-2] or new_width > logits.shape[-1]:
        raise ValueError(
            f"Expected logits of shape (..., 256, 256) covering new_size {tuple(new_size)}, "
            f"got {tuple(logits.shape)}."
        )
    leading = tuple(logits.shape[:-2])
    cropped = logits[..., :new_height, :new_width].to(torch.float32)
    planes = cropped.reshape(-1, 1, new_height, new_width)
    with torch.no_grad():
        resized = F.interpolate(planes, size=(height, width), mode="bilinear", align_corners=False)
    resized = resized.reshape(*leading, height, width)
    return resized.numpy() if as_numpy else resized


def logits_to_masks(
    low_res_logits: np.ndarray | torch.Tensor,
    new_size: tuple[int, int],
    original_size: tuple[int, int],
) -> np.ndarray:
    """Foreground masks ``(..., H, W)`` bool from frame logits: ``sigmoid(logit) > 0.5``
    after :func:`logits_to_original`. (In float32 this differs from ``logit > 0`` for
    logits in (0, ~6e-8), which the sigmoid rounds to exactly 0.5; the reference uses the
    sigmoid.)"""
    logits = logits_to_original(low_res_logits, new_size, original_size)
    logits = torch.as_tensor(logits)
    return (torch.sigmoid(logits) > 0.5).cpu().numpy()


def mask_to_256(mask: np.ndarray) -> np.ndarray:
    """Resize an (H, W) mask into the padded frame as the reference 3D loop does.

    Parameters
    ----------
    mask : (H, W) bool (-> 0/1) or integer map with values in 0..255. The reference resizes
        the slice's label map, which holds the object's label value k, so pass
        ``mask.astype(np.uint8) * k`` to reproduce it exactly (area interpolation rounds
        partially covered pixels, so small values vanish sooner than large ones).

    Returns
    -------
    (256, 256) uint8: area-resized like the image, zero-padded at the bottom and right.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask_to_256 expects an (H, W) mask, got shape {mask.shape}.")
    if mask.dtype == np.bool_:
        mask = mask.astype(np.uint8)
    elif mask.dtype != np.uint8:
        if mask.size and (mask.min() < 0 or mask.max() > 255):
            raise ValueError("mask_to_256 needs mask values in 0..255.")
        mask = mask.astype(np.uint8)
    return pad_to_frame(resize_longest_side(mask))


def mask_to_box_256(mask_256: np.ndarray, margin: int = BOX_MARGIN_256) -> np.ndarray | None:
    """The next slice's box from a (256, 256) frame mask, as the LiteMedSAM 3D loop makes it.

    Returns ``[x_min, y_min, x_max, y_max]`` int64: the tight box of the pixels > 0, widened
    by ``margin`` on every side and clipped to ``[0, 256]`` (note: 256, not 255, on the
    high side). ``None`` when the mask is empty (the caller then falls back to the
    scaled box it started from).
    """
    mask_256 = np.asarray(mask_256)
    if mask_256.ndim != 2:
        raise ValueError(f"mask_to_box_256 expects a 2D mask, got shape {mask_256.shape}.")
    rows, cols = np.nonzero(mask_256 > 0)
    if rows.size == 0:
        return None
    height, width = mask_256.shape
    return np.array(
        [
            max(0, int(cols.min()) - margin),
            max(0, int(rows.min()) - margin),
            min(width, int(cols.max()) + margin),
            min(height, int(rows.max()) + margin),
        ],
        dtype=np.int64,
    )


def _check_size(size: tuple[int, int], name: str) -> tuple[int, int]:
    try:
        height, width = (int(side) for side in size)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be two integers (height, width), got {size!r}.") from None
    if height < 1 or width < 1:
        raise ValueError(f"{name} must be positive, got ({height}, {width}).")
    return height, width
