"""The per-slice rules of 3D propagation, on masks and on a thresholding stand-in predictor."""

from __future__ import annotations

import numpy as np
import pytest

from napari_swinlitemedsam.evaluation.metrics import dice
from napari_swinlitemedsam.inference import transforms
from napari_swinlitemedsam.inference.generators import run_to_end
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
