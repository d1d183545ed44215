"""Whole cases: an image (2D or 3D) and its boxes in, a label map out.

This is what the challenge judged: ``segs`` with label k for the k-th box, later boxes winning
where boxes overlap. 2D images are encoded once and all boxes decoded in one batch; 3D stacks go
through :func:`volume.segment_volume`.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Protocol, cast

import numpy as np

from napari_swinlitemedsam.inference import intensity
from napari_swinlitemedsam.inference.generators import relay
from napari_swinlitemedsam.inference.predictor import BoxPredictor
from napari_swinlitemedsam.inference.volume import (
    DEFAULT_RULES,
    PropagationRules,
    SliceResult,
    segment_volume,
)


class Case(Protocol):
    """What :func:`segment_case` needs of a case (``io.challenge_io.ChallengeCase`` has it).

    ``imgs``: (H, W, 3) or (D, H, W); ``boxes``: (N, 4) xyxy or (N, 6) xyzxyz, inclusive pixels.
    """

    name: str
    imgs: np.ndarray
    boxes: np.ndarray
    is_3d: bool


@dataclass(frozen=True)
class CaseProgress:
    """Progress of one case: ``done`` of ``total`` steps, with a short message."""

    done: int
    total: int
    message: str


def segment_image_2d(
    predictor: BoxPredictor, image: np.ndarray, boxes: np.ndarray, boxes_per_step: int = 256
) -> np.ndarray:
    """Segment (N, 4) inclusive xyxy boxes on an (H, W) or (H, W, 3) image; (H, W) labels.

    Masks are pasted ``boxes_per_step`` boxes at a time, so thousands of boxes never hold
    thousands of full-size masks in memory. Later boxes win where boxes overlap.
    """
    predictor.set_image(image)
    boxes = np.asarray(boxes)
    count = len(boxes)
    labels = np.zeros(predictor.current.original_size, dtype=np.uint8 if count < 256 else np.uint16)
    for start in range(0, count, boxes_per_step):
        masks = predictor.predict(boxes[start : start + boxes_per_step]).masks
        for offset, mask in enumerate(masks):
            labels[mask] = start + offset + 1
    return labels


def volume_to_uint8(
    volume: np.ndarray, modality: str = "auto", window: str | tuple[float, float] | None = None
) -> np.ndarray:
    """Map a whole (D, H, W) stack to uint8 with one intensity mapping for all slices.

    ``window``: a CT window preset or ``(low, high)`` bounds (see :func:`intensity.to_uint8`);
    None applies the automatic rule.
    """
    if volume.dtype == np.uint8 and window is None:
        return volume
    return intensity.to_uint8(volume, modality=modality, window=window)


def segment_case(
    predictor: BoxPredictor,
    case: Case,
    include_end_slices: bool = True,
    stop_when_empty: bool | None = None,
    rules: PropagationRules = DEFAULT_RULES,
) -> Generator[CaseProgress, None, np.ndarray]:
    """Segment one challenge case; yields progress, returns ``segs``.

    3D cases propagate with ``rules`` (``volume.REFERENCE_RULES`` for the reference's
    results); ``stop_when_empty``, when given, overrides that rule."""
    if not case.is_3d:
        yield CaseProgress(0, 1, f"{case.name}: encoding")
        segs = segment_image_2d(predictor, case.imgs, case.boxes)
        yield CaseProgress(1, 1, f"{case.name}: {len(case.boxes)} boxes")
        return segs
    volume = volume_to_uint8(case.imgs)
    steps = segment_volume(
        predictor,
        volume,
        case.boxes,
        include_end_slices=include_end_slices,
        stop_when_empty=stop_when_empty,
        volume_key=("case", case.name),
        rules=rules,
    )

    def progress(result: SliceResult) -> CaseProgress:
        return CaseProgress(
            result.done,
            result.total,
            f"{case.name}: object {result.object_index + 1}, slice {result.z} "
            f"({result.encoded_slices} slices encoded)",
        )

    labels = yield from relay(steps, progress)
    return cast(np.ndarray, labels)  # segment_volume returns None only with paste=False
