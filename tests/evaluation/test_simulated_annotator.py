"""The simulated annotator on small synthetic stacks with the thresholding stand-in predictor."""

from __future__ import annotations

import numpy as np
import pytest

from napari_swinlitemedsam.evaluation.simulated_annotator import (
    largest_slice,
    simulate_object,
    tight_box,
    worst_slice,
)
from napari_swinlitemedsam.inference.volume import KEY_SLICE_RULES, REFERENCE_RULES
from threshold_predictor import ThresholdPredictor

# The stand-in's "IoU prediction" is the bright fraction of the box, which is below 0.5 for
# a box widened around a small square: the score stop is tested in test_propagation_rules.
RULES = KEY_SLICE_RULES.with_options(min_score=0.0)


def two_part_object(depth: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """An object on slices 1-4 (largest on 3) and again on 8-10, with a gap between."""
    volume = np.zeros((depth, 256, 256), dtype=np.uint8)
    truth = np.zeros(volume.shape, dtype=bool)
    for z, half in ((1, 10), (2, 14), (3, 20), (4, 12), (8, 9), (9, 11), (10, 8)):
        truth[z, 128 - half : 128 + half, 100 - half : 100 + half] = True
    volume[truth] = 220
    return volume, truth


def test_helpers():
    _, truth = two_part_object()
    assert largest_slice(truth) == 3
    np.testing.assert_array_equal(tight_box(truth[3]), [80, 108, 119, 147])
    prediction = truth.copy()
    prediction[8:11] = False
    assert worst_slice(prediction, truth, taken={3}) == 9
    assert worst_slice(truth, truth, taken=set()) is None


def test_a_second_box_on_the_worst_slice_finds_the_part_propagation_missed():
    volume, truth = two_part_object()
    predictor = ThresholdPredictor()
    result = simulate_object(predictor, volume, truth, rules=RULES)
    # First box on the largest slice (3): propagation stops at the empty slice 5, so the part
    # on 8-10 is missed; the second box goes on its worst slice (9) and finishes the object.
    assert result.key_slices == [3, 9]
    first_part = truth[:5].sum() / truth.sum()
    assert result.first_dsc == pytest.approx(2 * first_part / (1 + first_part))
    assert result.boxes_to_target == 2
    assert result.dsc_per_box[-1] == pytest.approx(1.0)
    assert np.array_equal(result.masks, truth)
    assert predictor.encodes > 0 and result.seconds >= 0


def test_stops_after_max_interactions_without_reaching_the_target():
    volume, truth = two_part_object()
    result = simulate_object(ThresholdPredictor(), volume, truth, RULES, max_interactions=1)
    assert result.boxes_to_target is None
    assert len(result.dsc_per_box) == 1 and result.key_slices == [3]


def test_reference_rules_can_be_simulated_too():
    volume, truth = two_part_object()
    result = simulate_object(ThresholdPredictor(), volume, truth, rules=REFERENCE_RULES)
    assert result.boxes_to_target == 2


def test_refuses_an_empty_object_or_mismatched_shapes():
    volume, truth = two_part_object()
    with pytest.raises(ValueError, match="empty"):
        simulate_object(ThresholdPredictor(), volume, np.zeros_like(truth))
    with pytest.raises(ValueError, match="must be one"):
        simulate_object(ThresholdPredictor(), volume, truth[:5])
