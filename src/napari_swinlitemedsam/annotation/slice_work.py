"""The work of each annotator job, on plain arrays: what runs inside a worker thread.

Nothing here touches a layer or a widget; every function takes the predictor and the image as
the model sees it (see :func:`prepare_image`) and returns (or yields) plain results. The predictor
is not thread-safe: the caller runs one of these at a time.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import dataclass

import numpy as np

from napari_swinlitemedsam.annotation.annotator_state import SliceKey
from napari_swinlitemedsam.annotation.jobs import DecodeJob, EncodeJob, PrefetchJob, PropagateJob


@dataclass(frozen=True)
class DecodeResult:
    """``masks``: (N, H, W) bool in the order of ``job.ids``; ``seconds`` of model time."""

    job: DecodeJob
    masks: np.ndarray
    seconds: float


def plane(image: np.ndarray, slice_index: SliceKey) -> np.ndarray:
    """The (H, W[, 3]) plane of a 2D image (``None``) or slice ``z`` of a (D, H, W) stack."""
    return image if slice_index is None else image[slice_index]


def load_predictor(name_or_path: str, device: str, disk_cache=None, precision: str = "auto"):
    """Load weights (offline) and return ``(BoxPredictor, seconds)``; ``precision`` of the
    image encoder: ``"auto"`` (runtime and precision chosen by the one-time self-check of
    :mod:`~napari_swinlitemedsam.inference.runtime_choice`), ``"fp32"``, ``"bf16"`` or ``"fp16"``.
    A self-check not made yet is deferred: the predictor starts on torch float32 and its
    ``pending_self_check`` is run a step at a time between the annotator's jobs.

    ``disk_cache``: an optional
    :class:`~napari_swinlitemedsam.inference.disk_cache.DiskEmbeddingCache` the predictor reads
    encoded slices from and stores them in.
    """
    from napari_swinlitemedsam.inference.predictor import BoxPredictor

    started = time.perf_counter()
    predictor = BoxPredictor.from_pretrained(
        name_or_path, device=device, precision=precision, self_check="later"
    )
    predictor.disk_cache = disk_cache
    return predictor, time.perf_counter() - started


def prepare_image(data, is_stack: bool, window=None, read_ahead_bytes: int | None = None):
    """The image as the model sees it.

    A (D, H, W) stack becomes a :class:`~napari_swinlitemedsam.inference.volume_slices.
    VolumeSlices`: slices are read (from numpy, dask, zarr or a multiscale list, whatever the
    layer holds) and mapped to uint8 when a job asks for them, with one mapping for the whole
    stack, so a stack bigger than memory is never read whole. A 2D image is returned as it is
    (the predictor maps its intensities itself), or mapped with ``window`` when one is given.

    ``window``: None for the automatic rule, else a CT window preset name or ``(low, high)``
    bounds, applied to a stack or a grey 2D image (colour images keep their values).
    ``read_ahead_bytes``: the stack's budget of decoded slices kept for reuse (None: the
    default of :mod:`~napari_swinlitemedsam.inference.read_ahead`).
    """
    from napari_swinlitemedsam.inference.intensity import to_uint8
    from napari_swinlitemedsam.inference.volume_slices import VolumeSlices

    if is_stack:
        if read_ahead_bytes is None:
            return VolumeSlices(data, window=window)
        return VolumeSlices(data, window=window, read_ahead_bytes=read_ahead_bytes)
    array = np.asarray(data)
    if window is not None and array.ndim == 2:
        return to_uint8(array, window=window)
    return array


def read_and_prepare(path):
    """Read an image file and map it for the model: ``(LoadedImage, prepared)``."""
    from napari_swinlitemedsam.io.image_files import read_image

    loaded = read_image(path)
    return loaded, prepare_image(loaded.data, loaded.is_stack)


def encode_slice(predictor, image: np.ndarray, job: EncodeJob | PrefetchJob):
    """Encode one slice into the predictor's cache under ``(job.image_key, z)``;
    returns ``(slice_index, seconds)``."""
    started = time.perf_counter()
    predictor.encode(plane(image, job.slice_index), key=(job.image_key, job.slice_index))
    return job.slice_index, time.perf_counter() - started


def decode_slice(predictor, image: np.ndarray, job: DecodeJob) -> DecodeResult:
    """Encode the slice (or take it from the cache) and decode all its boxes in one call."""
    started = time.perf_counter()
    encoded = predictor.encode(plane(image, job.slice_index), key=(job.image_key, job.slice_index))
    predictor.set_encoded(encoded)
    prediction = predictor.predict(
        job.boxes,
        points=job.points,
        point_labels=job.point_labels,
        slice_index=job.slice_index or 0,
    )
    return DecodeResult(job, prediction.masks, time.perf_counter() - started)


def propagate_object(
    predictor, volume: np.ndarray, job: PropagateJob, reference: bool = False
) -> Generator:
    """Follow one object through a (D, H, W) uint8 stack from its key-slice boxes.

    ``reference``: the LiteMedSAM reference scripts' rules (for comparisons) instead of our
    default :data:`~napari_swinlitemedsam.inference.volume.KEY_SLICE_RULES`.
    Yields :class:`~napari_swinlitemedsam.inference.volume.SliceResult` per slice; returns
    ``{z: (H, W) bool mask}``. Stops at the next slice when the generator is closed.
    """
    from napari_swinlitemedsam.inference.volume import (
        KEY_SLICE_RULES,
        REFERENCE_RULES,
        propagate_from_key_slices,
    )

    rules = REFERENCE_RULES if reference else KEY_SLICE_RULES
    return (
        yield from propagate_from_key_slices(
            predictor, volume, job.key_boxes, volume_key=job.image_key, rules=rules
        )
    )
