"""The per-slice rules of 3D propagation, on masks and on a thresholding stand-in predictor."""

from __future__ import annotations

import numpy as np
import pytest

from napari_swinlitemedsam.evaluation.metrics import dice
from napari_swinlitemedsam.inference import transforms
from napari_swinlitemedsam.inference.generators import run_to_end
from napari_swinlitemedsam.inference.propagation_rules import (
    MIN_KEY_CONTRAST,
    contrast_ratio,
    mask_contrast,
)
from napari_swinlitemedsam.inference.volume import (
    DEFAULT_RULES,
    KEY_SLICE_RULES,
    REFERENCE_RULES,
    PropagationRules,
    propagate_from_key_slices,
    segment_volume,
)
from threshold_predictor import ThresholdPredictor


def disc(shape, centre, radius) -> np.ndarray:
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2


@pytest.mark.parametrize("seed", range(5))
def test_reference_rules_give_the_reference_box(seed):
    """The reference's box: the resized label map's tight box widened by 3, clipped to 256."""
    rng = np.random.default_rng(seed)
    height, width = rng.integers(40, 300, size=2)
    mask = np.zeros((height, width), dtype=bool)
    y0, x0 = rng.integers(0, height - 5), rng.integers(0, width - 5)
    mask[y0 : y0 + rng.integers(1, 30), x0 : x0 + rng.integers(1, 30)] = True
    label = int(rng.integers(1, 20))
    expected = transforms.mask_to_box_256(transforms.mask_to_256(mask.astype(np.uint8) * label))
    box = REFERENCE_RULES.next_box_256(mask, label, None)
    if expected is None:
        assert box is None
    else:
        np.testing.assert_array_equal(box, expected)


def test_margin_fraction_scales_with_the_object():
    mask = np.zeros((256, 256), dtype=bool)
    mask[100:140, 50:150] = True  # 40 rows (y) x 100 columns (x)
    rules = PropagationRules(margin_256=0, margin_fraction=0.1)
    x0, y0, x1, y1 = rules.next_box_256(mask, 1, None)
    assert (x0, x1) == (50 - 10, 149 + 10)  # 10 % of the width
    assert (y0, y1) == (100 - 4, 139 + 4)  # 10 % of the height


def test_clamp_keeps_the_box_inside_the_3d_box_plus_margin():
    mask = np.zeros((256, 256), dtype=bool)
    mask[60:200, 30:220] = True  # leaked far beyond the given box
    limit = np.array([80.0, 90.0, 150.0, 160.0])
    box = PropagationRules(clamp_to_box=True).next_box_256(mask, 1, limit)
    np.testing.assert_array_equal(box, [77, 87, 153, 163])
    unclamped = PropagationRules().next_box_256(mask, 1, limit)
    np.testing.assert_array_equal(unclamped, [27, 57, 222, 202])


def test_keep_connected_drops_parts_that_do_not_continue_the_previous_mask():
    previous = disc((64, 64), (20, 20), 8)
    near = disc((64, 64), (22, 21), 8)
    far = disc((64, 64), (50, 50), 10)  # larger, but unrelated to the previous slice
    cleaned = PropagationRules(keep_connected=True).clean(near | far, previous)
    assert np.array_equal(cleaned, near)
    # Without a previous mask the largest part stays.
    assert np.array_equal(PropagationRules(keep_connected=True).clean(near | far, None), far)


def test_fill_holes():
    ring = disc((32, 32), (16, 16), 10) & ~disc((32, 32), (16, 16), 4)
    assert np.array_equal(
        PropagationRules(fill_holes=True).clean(ring, None), disc((32, 32), (16, 16), 10)
    )


def test_end_rules_on_area_collapse_and_low_score():
    previous = disc((64, 64), (32, 32), 12)
    small = disc((64, 64), (32, 32), 3)
    assert PropagationRules(min_area_ratio=0.3).ends(small, previous, 0.9)
    assert not PropagationRules(min_area_ratio=0.3).ends(previous, previous, 0.9)
    assert PropagationRules(min_score=0.5).ends(previous, previous, 0.2)
    assert not REFERENCE_RULES.ends(small, previous, 0.0)


def leaking_volume(depth: int = 9) -> tuple[np.ndarray, np.ndarray]:
    """A bright disc (the object) in every slice and a bright bar that starts just right of it.

    Each reference step widens the box by 3 pixels into the bar, so the mask creeps along it.
    """
    volume = np.zeros((depth, 256, 256), dtype=np.uint8)
    truth = np.zeros(volume.shape, dtype=bool)
    for z in range(depth):
        truth[z] = disc((256, 256), (128, 100), 20)
        volume[z][truth[z]] = 200
        volume[z, 120:136, 122:250] = 200  # the neighbour, touching the disc's right side
    return volume, truth


BOXED = REFERENCE_RULES.with_options(clamp_to_box=True, stop_when_empty=True)


def test_boxed_rules_stop_a_leak_that_the_reference_follows():
    volume, truth = leaking_volume()
    box = np.array([[80, 108, 0, 120, 148, 8]])  # the disc's tight 3D box
    reference = run_to_end(segment_volume(ThresholdPredictor(), volume, box, rules=REFERENCE_RULES))
    ours = run_to_end(segment_volume(ThresholdPredictor(), volume, box, rules=BOXED))
    reference_dsc, our_dsc = dice(reference == 1, truth), dice(ours == 1, truth)
    # The reference's mask reaches further along the bar on every slice away from the middle.
    reference_width = [int(np.flatnonzero(reference[z].any(axis=0)).max()) for z in range(9)]
    assert reference_width[0] > reference_width[4] + 9
    assert our_dsc > reference_dsc + 0.02
    ours_right = int(np.flatnonzero(ours.any(axis=(0, 1))).max())
    assert ours_right <= 120 + BOXED.margin_256


def test_the_stop_rule_ends_the_object_while_the_reference_repaints_the_start_box():
    volume = np.zeros((8, 256, 256), dtype=np.uint8)
    volume[:4, 100:140, 100:140] = 200  # the object: slices 0-3
    volume[6:, 105:135, 105:135] = 200  # something else, in the same box, after a gap
    box = np.array([[100, 100, 0, 139, 139, 7]])
    reference = run_to_end(segment_volume(ThresholdPredictor(), volume, box, rules=REFERENCE_RULES))
    ours = run_to_end(segment_volume(ThresholdPredictor(), volume, box, rules=BOXED))
    assert reference[6:].any()
    assert not ours[4:].any()
    assert ours[:4].all(axis=(1, 2)).sum() == 0 and ours[:4].any(axis=(1, 2)).all()


def test_key_slices_are_kept_even_when_a_stop_rule_would_fire():
    volume = np.zeros((5, 256, 256), dtype=np.uint8)
    volume[:, 100:104, 100:104] = 200  # a tiny object: 16 of 1600 box pixels
    rules = KEY_SLICE_RULES
    masks = run_to_end(
        propagate_from_key_slices(
            ThresholdPredictor(), volume, {2: np.array([90, 90, 129, 129])}, rules=rules
        )
    )
    assert masks[2].sum() == 16


def test_3d_boxes_keep_the_reference_rules_by_default():
    """No candidate passed the adoption rule for 3D boxes (docs/pipeline.md)."""
    assert DEFAULT_RULES == REFERENCE_RULES


# the gap rules alone: the contrast stop would also end a mask that creeps along a bright bar
NO_CONTRAST_STOP = KEY_SLICE_RULES.with_options(min_contrast_ratio=0.0)
BOTH_ENDS = NO_CONTRAST_STOP.with_options(fill_gaps_from_both_ends=True)
HALVES = NO_CONTRAST_STOP.with_options(fill_gaps_from_both_ends=False)


class RecordingPredictor(ThresholdPredictor):
    """The stand-in predictor, keeping every decoded (slice, mask, IoU prediction)."""

    def __init__(self) -> None:
        super().__init__()
        self.decoded: list[tuple[int, np.ndarray, float]] = []

    def predict_256(self, boxes_256, encoded, slice_index: int = 0):
        prediction = super().predict_256(boxes_256, encoded, slice_index)
        for mask, score in zip(prediction.masks, prediction.scores):
            self.decoded.append((slice_index, mask, float(score)))
        return prediction


def test_a_gap_lost_from_one_key_slice_is_filled_from_the_other():
    """The object fades on slice 2, so a propagation from key slice 0 ends there.

    Halves of the gap (the option off) leave slices 2-4 to key slice 0, which lost the object;
    from both ends, key slice 8 still reaches slices 3-4.
    """
    volume = np.zeros((9, 256, 256), dtype=np.uint8)
    object_ = disc((256, 256), (128, 128), 20)
    for z in range(9):
        if z != 2:
            volume[z][object_] = 200
    keys = {0: np.array([108, 108, 148, 148]), 8: np.array([108, 108, 148, 148])}
    halves = run_to_end(propagate_from_key_slices(ThresholdPredictor(), volume, keys, rules=HALVES))
    both = run_to_end(
        propagate_from_key_slices(ThresholdPredictor(), volume, keys, rules=BOTH_ENDS)
    )
    assert not any(halves.get(z, np.zeros(1)).any() for z in (3, 4))
    for z in (0, 1, 3, 4, 5, 6, 7, 8):
        assert np.array_equal(both[z], object_), z
    assert not both[2].any()


def test_both_ends_keep_per_slice_the_mask_with_the_higher_iou_prediction():
    """A bar touches the object on slices 0-4: every step along it widens the box by 3 pixels
    into the bar (a lower IoU prediction from the stand-in), so per slice the mask from the
    key slice nearer along the bar should win."""
    volume, truth = leaking_volume(depth=9)
    volume[5:, 120:136, 122:250] = 0  # the bar only on slices 0-4
    keys = {0: np.array([80, 108, 120, 148]), 8: np.array([80, 108, 120, 148])}
    predictor = RecordingPredictor()
    run = propagate_from_key_slices(predictor, volume, keys, rules=BOTH_ENDS)
    yielded = {}
    try:
        while True:
            result = next(run)
            yielded[result.z] = result.mask  # a later result for a slice replaces the earlier
    except StopIteration as stop:
        masks = stop.value
    twice = 0
    for z in range(1, 8):
        candidates = [(score, mask) for zz, mask, score in predictor.decoded if zz == z]
        # one decode from each end, unless the direction from key slice 0 already ended
        # (slice 5: the bar is gone, its wide box scores below 0.5; slices 6-7 not reached)
        assert len(candidates) == (2 if z <= 5 else 1), z
        twice += len(candidates) == 2
        best_score, best_mask = max(candidates, key=lambda pair: pair[0])
        expected = best_mask if best_score >= BOTH_ENDS.min_score else np.zeros_like(best_mask)
        assert np.array_equal(masks[z], expected), z
        assert np.array_equal(yielded[z], masks[z]), z
    assert twice == 5
    # Each slice of the bar keeps the mask that crept along it for fewer slices (from key
    # slice 0 on slices 1-2, from key slice 8 on slices 3-4): better than halves of the gap.
    halves = run_to_end(propagate_from_key_slices(ThresholdPredictor(), volume, keys, rules=HALVES))
    both_dsc = dice(np.stack([masks[z] for z in range(9)]), truth)
    halves_dsc = dice(np.stack([halves[z] for z in range(9)]), truth)
    assert both_dsc > halves_dsc + 0.005


def test_both_ends_is_on_for_key_slices_only():
    """It passed the adoption rule for key slices (docs/pipeline.md); the reference schedule
    and 3D boxes (one start slice, no gap) keep it off."""
    assert KEY_SLICE_RULES.fill_gaps_from_both_ends
    assert NO_CONTRAST_STOP == BOTH_ENDS
    for rules in (REFERENCE_RULES, DEFAULT_RULES):
        assert not rules.fill_gaps_from_both_ends


def test_mask_contrast_ignores_the_slice_scale_and_separates_an_object_from_noise():
    rng = np.random.default_rng(0)
    image = rng.uniform(40, 60, (64, 64))
    nucleus = disc((64, 64), (32, 32), 8)
    image[nucleus] += 100
    contrast = mask_contrast(image, nucleus)
    assert contrast is not None and contrast > 10
    # the model's input is the slice rescaled: the contrast does not change
    rescaled = (image - image.min()) / (image.max() - image.min())
    assert mask_contrast(rescaled[None].repeat(3, axis=0), nucleus) == pytest.approx(contrast)
    noise_blob = rng.uniform(0, 1, (64, 64)) > 0.5
    assert mask_contrast(image - 100 * nucleus, noise_blob & nucleus) < 2
    assert mask_contrast(image, np.zeros((64, 64), dtype=bool)) is None


def test_end_rule_on_contrast_ratio():
    mask = disc((32, 32), (16, 16), 6)
    rules = PropagationRules(min_contrast_ratio=0.25)
    assert rules.ends(mask, mask, 0.9, contrast_ratio=0.1)
    assert not rules.ends(mask, mask, 0.9, contrast_ratio=0.6)
    assert not rules.ends(mask, mask, 0.9, contrast_ratio=None)  # nothing to compare with
    assert not REFERENCE_RULES.ends(mask, mask, 0.9, contrast_ratio=0.01)  # off there
    assert KEY_SLICE_RULES.ends(mask, mask, 0.9, contrast_ratio=0.2)  # on for key slices
    assert not DEFAULT_RULES.min_contrast_ratio


def test_contrast_ratio_compares_only_objects_that_stood_out_on_their_key_slice():
    assert contrast_ratio(2.0, 8.0) == pytest.approx(0.25)
    assert contrast_ratio(None, 8.0) is None
    assert contrast_ratio(2.0, None) is None
    # an atlas-like region, no brighter or darker than its surroundings: no ratio, no stop
    assert contrast_ratio(0.05, 0.5 * MIN_KEY_CONTRAST) is None


def fading_volume() -> tuple[np.ndarray, np.ndarray]:
    """A bright disc on slices 3-6 of a dim, slightly noisy background; slices 0-2 are noise
    whose bright pixels fill ~60 % of any box, so the stand-in's masks and IoU estimates
    there look like an object's (as a network's can on an out-of-focus slice)."""
    rng = np.random.default_rng(1)
    volume = rng.uniform(40, 60, (7, 256, 256))
    truth = np.zeros((7, 256, 256), dtype=bool)
    for z in range(3, 7):
        truth[z] = disc((256, 256), (128, 128), 20)
    volume[truth] = 220
    volume[:3] = rng.uniform(100, 170, (3, 256, 256))
    return volume.astype(np.uint8), truth


def test_the_contrast_stop_ends_an_object_where_it_fades_into_noise():
    volume, truth = fading_volume()
    key = {5: np.array([108, 108, 148, 148])}
    without = run_to_end(
        propagate_from_key_slices(ThresholdPredictor(), volume, key, rules=NO_CONTRAST_STOP)
    )
    assert all(without[z].any() for z in range(3))  # without the stop it follows the noise
    masks = run_to_end(propagate_from_key_slices(ThresholdPredictor(), volume, key))
    assert not any(masks[z].any() for z in range(3) if z in masks)
    for z in range(3, 7):
        assert dice(masks[z], truth[z]) == 1.0
