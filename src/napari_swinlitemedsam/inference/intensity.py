"""Intensity policy: how any image becomes the uint8 input the models were trained on.

Both models were trained and evaluated on the challenge's uint8 images, so every image is
brought to uint8 first, by one of these rules:

``uint8`` input
    Passed through unchanged, whatever the modality (this is exactly what the reference
    inference scripts receive). Only an explicit ``window`` changes it.
``bool`` input
    ``False`` -> 0, ``True`` -> 255.
CT (``modality="ct"``, or ``"auto"`` when the smallest value is <= -500, i.e. air in
Hounsfield units)
    Clip to a window and scale it linearly: the window's lower bound -> 0, its upper bound
    -> 255, truncated to uint8. ``window`` is a preset name (:data:`CT_WINDOW_PRESETS`:
    soft tissue W400 L40, the challenge default; lung W1500 L-600; bone W1800 L400; brain
    W80 L40) or explicit ``(low, high)`` bounds in the image's units; the default is soft
    tissue. The organisers' ``pre_CT_MR.py`` scales by the clipped volume's own minimum and
    maximum instead of the bounds; for any volume that reaches both bounds (every body CT:
    air and bone) that is the same mapping, and using the bounds keeps the scaling identical
    from one slice or crop to the next.
Everything else (``"mr"``, ``"microscopy"``, or ``"auto"`` otherwise)
    The organisers' non-CT rule: take the 0.5th and 99.5th percentiles of the voxels > 0,
    clip to them, min-max scale to 0..255, set voxels that were exactly 0 back to 0, and
    truncate to uint8. If no voxel is > 0 the percentiles are taken over all voxels. If the
    clipped image is constant, its non-zero voxels become 255.
``modality="uint8"``
    The image must already hold whole numbers in 0..255; they are cast unchanged.

Non-finite values (NaN, +-inf) are replaced by the smallest finite value first; an image with
no finite value becomes all zeros. The percentile rule depends on the whole image, so convert
a 3D volume once as a whole, not slice by slice (the organisers converted whole volumes).

Axis order is preserved: any shape in, the same shape out, except :func:`to_rgb_uint8`,
which returns ``(H, W, 3)``.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from napari_swinlitemedsam.inference.blockwise import Blocks, FiniteStats, finite_stats, percentile

__all__ = [
    "CT_AIR_THRESHOLD",
    "CT_WINDOW_PRESETS",
    "MODALITIES",
    "Uint8Mapping",
    "display_range",
    "intensity_mapping",
    "guess_modality",
    "to_rgb_uint8",
    "to_uint8",
    "window_bounds",
]

#: CT window presets as ``name -> (level, width)`` in Hounsfield units.
CT_WINDOW_PRESETS = types.MappingProxyType(
    {
        "soft_tissue": (40.0, 400.0),
        "lung": (-600.0, 1500.0),
        "bone": (400.0, 1800.0),
        "brain": (40.0, 80.0),
    }
)
MODALITIES = ("auto", "ct", "mr", "microscopy", "uint8")
#: ``modality="auto"`` treats an image as CT when its smallest finite value is at most this.
CT_AIR_THRESHOLD = -500.0

_LOWER_PERCENTILE = 0.5
_UPPER_PERCENTILE = 99.5


def window_bounds(window: str | tuple[float, float] | None) -> tuple[float, float]:
    """``(low, high)`` intensity bounds of a CT window preset name or explicit bounds.

    ``None`` gives the soft-tissue window (W400 L40 -> (-160, 240)).
    """
    if window is None:
        window = "soft_tissue"
    if isinstance(window, str):
        key = window.strip().lower().replace("-", "_").replace(" ", "_")
        if key not in CT_WINDOW_PRESETS:
            raise ValueError(
                f"Unknown CT window {window!r}; use one of {sorted(CT_WINDOW_PRESETS)} "
                "or explicit (low, high) bounds."
            )
        level, width = CT_WINDOW_PRESETS[key]
        return level - width / 2, level + width / 2
    try:
        low, high = (float(bound) for bound in window)
    except (TypeError, ValueError):
        raise ValueError(
            f"A window must be a preset name or two numbers (low, high), got {window!r}."
        ) from None
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise ValueError(f"Window bounds must be finite with low < high, got ({low}, {high}).")
    return low, high


def guess_modality(image: np.ndarray) -> str:
    """What ``modality="auto"`` picks: ``"uint8"``, ``"bool"``, ``"ct"`` or ``"mr"``."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return "uint8"
    if image.dtype == np.bool_:
        return "bool"
    finite = _finite_values(image)
    if finite.size and float(finite.min()) <= CT_AIR_THRESHOLD:
        return "ct"
    return "mr"


def to_uint8(
    image: np.ndarray,
    modality: str = "auto",
    window: str | tuple[float, float] | None = None,
) -> np.ndarray:
    """Convert an image of any shape and real dtype to uint8 following the module's policy.

    Parameters
    ----------
    image : array of any shape; bool, integer or float.
    modality : one of :data:`MODALITIES`.
    window : CT window preset name or ``(low, high)``; when given, the window is applied
        whatever the modality (except ``"uint8"``, which forbids it).

    Returns
    -------
    uint8 array of the same shape. A uint8 input without ``window`` is returned as is.
    """
    image = np.asarray(image)
    if modality not in MODALITIES:
        raise ValueError(f"Unknown modality {modality!r}; use one of {MODALITIES}.")
    _check_real(image)
    if modality == "uint8":
        if window is not None:
            raise ValueError('modality="uint8" casts values unchanged; it cannot take a window.')
        return _cast_exact_uint8(image)
    if window is None:
        if image.dtype == np.uint8:
            return image
        if image.dtype == np.bool_:
            return image.astype(np.uint8) * np.uint8(255)
    return intensity_mapping(image, modality=modality, window=window).apply(image)


@dataclass(frozen=True)
class Uint8Mapping:
    """The element-wise map one image (or a whole volume) gets to uint8, its parameters fixed.

    Decided once from the whole image by :func:`intensity_mapping` (or from a sample of slices
    of a volume that is not in memory), then applied to the image or to any part of it:
    ``mapping.apply(volume[z])`` equals ``to_uint8(volume)[z]`` when the mapping was decided on
    ``volume``. ``kind`` is ``"zeros"``, ``"window"`` (clip to ``low..high``, scale) or
    ``"percentile"`` (the non-CT rule: clip to ``low..high``, scale ``smallest..largest``, zeros
    stay zero); ``fill`` replaces non-finite values first.
    """

    kind: str
    low: float = 0.0
    high: float = 0.0
    smallest: float = 0.0
    largest: float = 0.0
    fill: float | None = None

    def apply(self, image: np.ndarray) -> np.ndarray:
        """``image`` (any shape, real dtype) -> uint8 of the same shape."""
        image = np.asarray(image)
        if self.kind == "zeros" or image.size == 0:
            return np.zeros(image.shape, dtype=np.uint8)
        blocks = Blocks(image, fill=self.fill)
        if self.kind == "window":
            low, high = self.low, self.high
            return blocks.map_to_uint8(image.shape, lambda values: _apply_window(values, low, high))
        return blocks.map_to_uint8(image.shape, self._percentile_map)

    def _percentile_map(self, values: np.ndarray) -> np.ndarray:
        low, high = np.float64(self.low), np.float64(self.high)
        smallest, largest = np.float64(self.smallest), np.float64(self.largest)
        if largest > smallest:
            scaled = (np.clip(values, low, high) - smallest) / (largest - smallest) * 255.0
        else:
            scaled = np.full(values.shape, 255.0)
        scaled[values == 0] = 0
        return scaled.astype(np.uint8)


def intensity_mapping(
    image: np.ndarray,
    modality: str = "auto",
    window: str | tuple[float, float] | None = None,
) -> Uint8Mapping:
    """The :class:`Uint8Mapping` :func:`to_uint8` applies to ``image`` (any shape, real dtype,
    not uint8/bool without a window: those need no statistics)."""
    image = np.asarray(image)
    if image.size == 0:
        return Uint8Mapping("zeros")
    stats = finite_stats(image)
    if stats is None:
        return Uint8Mapping("zeros")
    # Worked through in blocks (see :mod:`.blockwise`): extra memory stays a few MB whatever
    # the size of the stack, and the result is the same as on the whole array at once.
    fill = stats.low if stats.has_non_finite else None
    if (
        window is not None
        or modality == "ct"
        or (modality == "auto" and stats.low <= CT_AIR_THRESHOLD)
    ):
        low, high = window_bounds(window)
        return Uint8Mapping("window", low, high, fill=fill)
    return _percentile_mapping(Blocks(image, fill=fill), stats, fill)


def to_rgb_uint8(
    image: np.ndarray,
    modality: str = "auto",
    window: str | tuple[float, float] | None = None,
) -> np.ndarray:
    """Bring a 2D grey, RGB or RGBA image to ``(H, W, 3)`` uint8.

    Accepts ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` and ``(H, W, 4)`` (alpha is dropped).
    Non-uint8 input goes through :func:`to_uint8` first (over all colour channels together).
    Grey is repeated to three channels, as the organisers' conversion does.
    """
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] in (1, 3, 4):
        image = image[:, :, :3] if image.shape[2] != 1 else image[:, :, 0]
    elif image.ndim != 2:
        raise ValueError(
            "Expected a 2D image of shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), "
            f"got {image.shape}. For a volume, pass one (H, W) slice at a time."
        )
    converted = to_uint8(image, modality=modality, window=window)
    if converted.ndim == 2:
        converted = np.repeat(converted[:, :, None], 3, axis=2)
    return np.ascontiguousarray(converted)


def display_range(image: np.ndarray, max_samples: int = 1 << 20) -> tuple[float, float]:
    """Contrast limits for showing ``image`` (any shape) as the models see it, cheaply.

    uint8: (0, 255); bool: (0, 1); CT (as :func:`guess_modality` decides): the soft-tissue
    window; otherwise the 0.5th and 99.5th percentiles of the values > 0 of an evenly strided
    sample of at most ``max_samples`` values (so a large stack costs no copy of itself).
    """
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return 0.0, 255.0
    if image.dtype == np.bool_ or image.size == 0:
        return 0.0, 1.0
    flat = image.reshape(-1)
    step = max(1, flat.size // max_samples)
    sample = _finite_values(flat[::step]).astype(np.float64)
    if sample.size == 0:
        return 0.0, 1.0
    if float(sample.min()) <= CT_AIR_THRESHOLD:
        return window_bounds(None)
    positive = sample[sample > 0]
    sample = positive if positive.size else sample
    low, high = (float(v) for v in np.percentile(sample, [_LOWER_PERCENTILE, _UPPER_PERCENTILE]))
    return (low, high) if high > low else (low, low + 1.0)


def _check_real(image: np.ndarray) -> None:
    if not (
        image.dtype == np.bool_
        or np.issubdtype(image.dtype, np.integer)
        or np.issubdtype(image.dtype, np.floating)
    ):
        raise TypeError(
            f"Cannot convert an image of dtype {image.dtype} to uint8; "
            "expected bool, integer or real floating-point values."
        )


def _finite_values(image: np.ndarray) -> np.ndarray:
    if np.issubdtype(image.dtype, np.floating):
        return image[np.isfinite(image)]
    return image.ravel()


def _cast_exact_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    values = image.astype(np.float64)
    if values.size and not (
        np.isfinite(values).all()
        and values.min() >= 0
        and values.max() <= 255
        and np.array_equal(values, np.round(values))
    ):
        raise ValueError(
            'modality="uint8" needs whole numbers in 0..255; this image has other values. '
            'Use modality="auto" (or "ct"/"mr") to rescale it.'
        )
    return values.astype(np.uint8)


def _apply_window(values: np.ndarray, low: float, high: float) -> np.ndarray:
    clipped = np.clip(values, low, high)
    return ((clipped - low) / (high - low) * 255.0).astype(np.uint8)


def _percentile_mapping(blocks: Blocks, stats: FiniteStats, fill: float | None) -> Uint8Mapping:
    """The non-CT rule (module docstring) over ``blocks`` (non-finite values already replaced)."""
    count, positive_low, positive_high = 0, np.inf, -np.inf
    for _, block in blocks:
        positive = block[block > 0]
        if positive.size:
            count += positive.size
            positive_low = min(positive_low, float(positive.min()))
            positive_high = max(positive_high, float(positive.max()))
    keep: Callable[[np.ndarray], np.ndarray] | None
    if count:
        keep, sample = (lambda values: values > 0), (count, positive_low, positive_high)
    else:
        keep, sample = None, (blocks.size, stats.low, stats.high)
    low = np.float64(percentile(blocks, keep, _LOWER_PERCENTILE, *sample))
    high = np.float64(percentile(blocks, keep, _UPPER_PERCENTILE, *sample))
    # Clipping is monotonic: the clipped image's extremes are the clipped extremes.
    smallest = np.clip(np.float64(stats.low), low, high)
    largest = np.clip(np.float64(stats.high), low, high)
    return Uint8Mapping(
        "percentile", float(low), float(high), float(smallest), float(largest), fill=fill
    )
