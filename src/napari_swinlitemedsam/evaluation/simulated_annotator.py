"""A simulated annotator: how many boxes does a user need to get one 3D object right?

From a ground-truth mask of one object in a (D, H, W) stack the annotator does what a user of
the plugin does: draws a tight box around the object on its largest slice, lets the
propagation fill the stack, then, while the object's DSC is below the target, draws one more
key-slice box on the slice with the most wrong voxels (among slices the object is on and that
have no box yet) and propagates again, up to ``max_interactions`` boxes in all.

Every box is the ground truth's tight box on that slice (inclusive pixels), as a careful user
would draw it. Wrong voxels on slices beyond the object's ends count against the DSC but cannot
be fixed with a box (a user would erase them); the annotator then tries the worst slice inside
the object.
"""

from __future__ import annotations

import time
from collections.abc import Hashable
from dataclasses import dataclass, field

import numpy as np

from napari_swinlitemedsam.evaluation.metrics import dice
from napari_swinlitemedsam.inference.generators import run_to_end
from napari_swinlitemedsam.inference.volume import (
    KEY_SLICE_RULES,
    PropagationRules,
    propagate_from_key_slices,
)


@dataclass(frozen=True)
class SimulationResult:
    """What one simulated annotation of one object took.

    Attributes:
        dsc_per_box: DSC of the whole object after each box (index 0: after the first).
        boxes_to_target: boxes drawn until the DSC reached the target; None if never.
        key_slices: the slices that got a box, in the order drawn.
        seconds: wall time of all propagations (encodes included unless cached).
        masks: (D, H, W) bool, the object after the last box.
    """

    dsc_per_box: list[float]
    boxes_to_target: int | None
    key_slices: list[int]
    seconds: float
    masks: np.ndarray = field(repr=False)

    @property
    def first_dsc(self) -> float:
        return self.dsc_per_box[0]


def tight_box(mask: np.ndarray) -> np.ndarray:
    """(4,) inclusive ``[x_min, y_min, x_max, y_max]`` of an (H, W) bool mask (not empty)."""
    rows, cols = np.nonzero(mask)
    return np.array([cols.min(), rows.min(), cols.max(), rows.max()], dtype=np.float64)


def largest_slice(truth: np.ndarray) -> int:
    """Index of the slice where the (D, H, W) object has the most voxels."""
    return int(np.argmax(truth.reshape(truth.shape[0], -1).sum(axis=1)))


def worst_slice(prediction: np.ndarray, truth: np.ndarray, taken: set[int]) -> int | None:
    """The slice with the most wrong voxels among those the object is on and not in ``taken``."""
    errors = (prediction != truth).reshape(truth.shape[0], -1).sum(axis=1)
    on_object = truth.reshape(truth.shape[0], -1).any(axis=1)
    candidates = [z for z in np.flatnonzero(on_object) if int(z) not in taken and errors[z] > 0]
    if not candidates:
        return None
    return int(max(candidates, key=lambda z: errors[z]))


def simulate_object(
    predictor,
    volume: np.ndarray,
    truth: np.ndarray,
    rules: PropagationRules = KEY_SLICE_RULES,
    target: float = 0.90,
    max_interactions: int = 10,
    volume_key: Hashable | None = None,
) -> SimulationResult:
    """Annotate one object (``truth``, (D, H, W) bool) in a (D, H, W) uint8 ``volume``.

    ``predictor`` is a :class:`~napari_swinlitemedsam.inference.predictor.BoxPredictor`
    (or anything with its ``encode`` and ``predict_256``). Raises ValueError for an empty
    ``truth`` or mismatched shapes.
    """
    truth = np.asarray(truth, dtype=bool)
    if truth.shape != volume.shape or truth.ndim != 3:
        raise ValueError(f"truth {truth.shape} and volume {volume.shape} must be one (D, H, W)")
    if not truth.any():
        raise ValueError("the ground-truth object is empty: nothing to annotate")
    key_boxes: dict[int, np.ndarray] = {}
    order: list[int] = []
    scores: list[float] = []
    started = time.perf_counter()
    z = largest_slice(truth)
    prediction = np.zeros_like(truth)
    while z is not None and len(order) < max_interactions:
        key_boxes[z] = tight_box(truth[z])
        order.append(z)
        slices = run_to_end(
            propagate_from_key_slices(
                predictor, volume, key_boxes, volume_key=volume_key, rules=rules
            )
        )
        prediction = np.zeros_like(truth)
        for index, mask in slices.items():
            prediction[index] = mask
        scores.append(dice(prediction, truth))
        if scores[-1] >= target:
            break
        z = worst_slice(prediction, truth, set(order))
    reached = next((i + 1 for i, value in enumerate(scores) if value >= target), None)
    return SimulationResult(scores, reached, order, time.perf_counter() - started, prediction)
