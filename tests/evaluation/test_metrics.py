"""Challenge DSC / NSD on shapes whose scores can be worked out by hand.

Surface-area bookkeeping used below (unit spacing unless said otherwise). A binary mask is
scored as a voxel volume; each voxel corner whose 2x2x2 neighbourhood is mixed carries
area: a corner touching one voxel carries sqrt(3)/8, a corner on an edge (two voxels in a
row) carries sqrt(2)/2, a corner inside a flat face (four voxels in a square) carries 1.
With spacing (s0, s1, s2) those become
    vertex: sqrt((s1 s2)^2 + (s0 s2)^2 + (s0 s1)^2) / 8,
    edge along axis 2: s2 * sqrt(s0^2 + s1^2) / 2 (likewise for the other axes),
    face normal to axis 0: s1 * s2 (likewise).
A 2D mask is a one-voxel-thick slab, so each of its pixel corners appears twice (bottom
and top of the slab).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_swinlitemedsam.evaluation.metrics import (
    case_scores,
    dice,
    normalized_surface_dice,
    surface_area_per_code,
)

SQRT2, SQRT3 = math.sqrt(2.0), math.sqrt(3.0)


def square(shape: tuple[int, int], top: int, left: int, side: int) -> np.ndarray:
    mask = np.zeros(shape, dtype=np.uint8)
    mask[top : top + side, left : left + side] = 1
    return mask


def box(shape, corner, size) -> np.ndarray:
    mask = np.zeros(shape, dtype=np.uint8)
    mask[tuple(slice(c, c + n) for c, n in zip(corner, size))] = 1
    return mask


def square_slab_area(side: int) -> float:
    """Surface area of a side x side square scored as a slab: both layers of corners."""
    per_layer = (side - 1) ** 2 * 1.0 + 4 * (side - 1) * SQRT2 / 2 + 4 * SQRT3 / 8
    return 2 * per_layer


# --- the per-code area table ------------------------------------------------------------


def test_area_table_single_corner_edge_and_face_codes():
    spacing = (3.0, 0.5, 1.25)
    s0, s1, s2 = spacing
    areas = surface_area_per_code(spacing)
    # bit 4a + 2b + c is the voxel at offset (a, b, c) of the 2x2x2 neighbourhood
    vertex = math.sqrt((s1 * s2) ** 2 + (s0 * s2) ** 2 + (s0 * s1) ** 2) / 8
    assert areas[0b00000001] == pytest.approx(vertex, rel=1e-12)
    assert areas[0b00000011] == pytest.approx(s2 * math.hypot(s0, s1) / 2, rel=1e-12)
    assert areas[0b00000101] == pytest.approx(s1 * math.hypot(s0, s2) / 2, rel=1e-12)
    assert areas[0b00010001] == pytest.approx(s0 * math.hypot(s1, s2) / 2, rel=1e-12)
    assert areas[0b00001111] == pytest.approx(s1 * s2, rel=1e-12)
    assert areas[0b00110011] == pytest.approx(s0 * s2, rel=1e-12)
    assert areas[0] == 0.0 and areas[255] == 0.0


def test_area_table_is_symmetric_under_complement():
    areas = surface_area_per_code((0.7, 1.3, 2.9))
    np.testing.assert_allclose(areas, areas[::-1], rtol=1e-12)


def test_area_table_matches_the_challenge_table_sums():
    # Sums of the challenge's lookup table (marching-cubes triangles around the minority
    # corners) for two spacings; they pin every ambiguous-configuration choice.
    assert surface_area_per_code((1.0, 1.0, 1.0)).sum() == pytest.approx(
        241.34313970553737, rel=1e-12
    )
    assert surface_area_per_code((0.7, 1.3, 2.9)).sum() == pytest.approx(
        591.6622968920766, rel=1e-12
    )


# --- Dice --------------------------------------------------------------------------------


@pytest.mark.parametrize("shift", [0, 1, 3, 7, 10, 12])
def test_dice_of_shifted_squares_is_the_overlap_fraction(shift):
    side = 10
    gt = square((30, 40), 5, 5, side)
    pred = square((30, 40), 5, 5 + shift, side)
    assert dice(pred, gt) == pytest.approx(max(side - shift, 0) / side)


def test_dice_counts_voxels():
    gt = np.zeros((4, 4), np.uint8)
    gt[0, :3] = 1  # 3 pixels
    pred = np.zeros((4, 4), np.uint8)
    pred[0, 1:] = 1  # 3 pixels, 2 shared
    assert dice(pred, gt) == pytest.approx(2 * 2 / 6)


def test_dice_empty_cases():
    empty, full = np.zeros((5, 5)), np.ones((5, 5))
    assert math.isnan(dice(empty, empty))
    assert dice(empty, full) == 0.0
    assert dice(full, empty) == 0.0


def test_dice_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="same shape"):
        dice(np.zeros((3, 3)), np.zeros((3, 4)))


# --- NSD ---------------------------------------------------------------------------------


def test_nsd_identical_masks_is_one():
    gt = square((20, 20), 3, 4, 7)
    assert normalized_surface_dice(gt, gt) == 1.0


@pytest.mark.parametrize("shift", [1, 2])
def test_nsd_shift_within_tolerance_is_one(shift):
    # Every corner of one square has a corner of the other within `shift` <= 2 pixels.
    gt = square((30, 40), 5, 5, 10)
    pred = square((30, 40), 5, 5 + shift, 10)
    assert normalized_surface_dice(pred, gt) == pytest.approx(1.0, abs=1e-15)


def test_nsd_shift_of_three_loses_one_column_of_corners_per_square():
    side = 10
    gt = square((30, 40), 5, 5, side)
    pred = square((30, 40), 5, 8, side)
    # The first corner column of gt (distance 3 from pred) is out of tolerance: two
    # single-voxel corners and side-1 edge corners, on both slab layers. Same for pred's
    # last column.
    lost = 2 * (2 * SQRT3 / 8 + (side - 1) * SQRT2 / 2)
    expected = 1 - lost / square_slab_area(side)
    assert normalized_surface_dice(pred, gt) == pytest.approx(expected, rel=1e-12)
    assert normalized_surface_dice(gt, pred) == pytest.approx(expected, rel=1e-12)


def test_nsd_shift_of_four_loses_two_columns():
    side = 10
    gt = square((30, 40), 5, 5, side)
    pred = square((30, 40), 5, 9, side)
    border_column = 2 * SQRT3 / 8 + (side - 1) * SQRT2 / 2
    inner_column = 2 * SQRT2 / 2 + (side - 1) * 1.0
    lost = 2 * (border_column + inner_column)
    expected = 1 - lost / square_slab_area(side)
    assert normalized_surface_dice(pred, gt) == pytest.approx(expected, rel=1e-12)


def test_nsd_tolerance_is_inclusive_and_adjustable():
    gt = square((30, 40), 5, 5, 10)
    pred = square((30, 40), 5, 8, 10)
    assert normalized_surface_dice(pred, gt, tolerance=3.0) == pytest.approx(1.0)
    assert normalized_surface_dice(pred, gt, tolerance=2.999) < 1.0


def box_surface_areas(size, spacing):
    """Face, edge and vertex areas of a box of `size` voxels (see module docstring)."""
    n0, n1, n2 = size
    s0, s1, s2 = spacing
    faces = 2 * (
        (n1 - 1) * (n2 - 1) * s1 * s2
        + (n0 - 1) * (n2 - 1) * s0 * s2
        + (n0 - 1) * (n1 - 1) * s0 * s1
    )
    edges = 4 * (
        (n0 - 1) * s0 * math.hypot(s1, s2) / 2
        + (n1 - 1) * s1 * math.hypot(s0, s2) / 2
        + (n2 - 1) * s2 * math.hypot(s0, s1) / 2
    )
    vertices = 8 * math.sqrt((s1 * s2) ** 2 + (s0 * s2) ** 2 + (s0 * s1) ** 2) / 8
    return faces + edges + vertices


def test_nsd_3d_box_shifted_along_a_coarse_axis():
    # One voxel shift along axis 0 with 3 mm slices; in-plane spacing 2.5 mm. Out of
    # tolerance on gt: the whole bottom layer of corners (3 mm from anything of pred) and
    # the inside of the top face (3 mm above / 2.5 mm beside pred's surface). The rim of
    # the top face touches pred's sides. pred mirrors this.
    size, spacing = (4, 5, 6), (3.0, 2.5, 2.5)
    n0, n1, n2 = size
    s0, s1, s2 = spacing
    shape = (10, 11, 12)
    gt = box(shape, (2, 3, 3), size)
    pred = box(shape, (3, 3, 3), size)
    face_inside = (n1 - 1) * (n2 - 1) * s1 * s2
    bottom_rim = (
        2 * (n1 - 1) * s1 * math.hypot(s0, s2) / 2
        + 2 * (n2 - 1) * s2 * math.hypot(s0, s1) / 2
        + 4 * math.sqrt((s1 * s2) ** 2 + (s0 * s2) ** 2 + (s0 * s1) ** 2) / 8
    )
    lost = 2 * face_inside + bottom_rim
    expected = 1 - lost / box_surface_areas(size, spacing)
    assert normalized_surface_dice(pred, gt, spacing) == pytest.approx(expected, rel=1e-12)
    assert dice(pred, gt) == pytest.approx((n0 - 1) / n0)


def test_nsd_3d_spacing_applies_to_array_axes_in_order():
    gt = box((8, 9, 10), (2, 2, 2), (3, 4, 5))
    pred = box((8, 9, 10), (2, 2, 3), (3, 4, 5))  # one voxel along axis 2
    assert normalized_surface_dice(pred, gt, (5.0, 5.0, 2.0)) == pytest.approx(1.0)
    assert normalized_surface_dice(pred, gt, (1.0, 1.0, 2.01)) < 1.0
    assert normalized_surface_dice(pred, gt, (2.01, 1.0, 1.0)) == pytest.approx(1.0)


def test_nsd_empty_cases():
    empty = np.zeros((12, 12), np.uint8)
    gt = square((12, 12), 2, 2, 5)
    assert math.isnan(normalized_surface_dice(empty, empty))
    assert normalized_surface_dice(empty, gt) == 0.0
    assert normalized_surface_dice(gt, empty) == 0.0


def test_nsd_does_not_depend_on_where_the_shapes_sit():
    gt = square((20, 20), 0, 0, 6)
    pred = square((20, 20), 1, 3, 6)
    small = normalized_surface_dice(pred, gt)
    big = normalized_surface_dice(np.pad(pred, 17), np.pad(gt, 17))
    assert small == pytest.approx(big, rel=1e-14)


def test_nsd_rejects_bad_spacing():
    gt = square((10, 10), 2, 2, 4)
    with pytest.raises(ValueError, match="spacing"):
        normalized_surface_dice(gt, gt, (1.0, -1.0))
    with pytest.raises(ValueError, match="spacing"):
        normalized_surface_dice(gt, gt, (1.0, 1.0, 1.0))


# --- case scores (the challenge rules) --------------------------------------------------


def test_case_scores_averages_labels_one_to_max():
    gts = np.zeros((40, 40), np.uint8)
    gts[2:12, 2:12] = 1
    gts[20:30, 20:30] = 2
    segs = np.zeros_like(gts)
    segs[2:12, 2:12] = 1  # perfect
    segs[20:30, 23:33] = 2  # shifted by 3
    scores = case_scores(segs, gts)
    assert scores["per_label"][1]["dsc"] == pytest.approx(1.0)
    assert scores["per_label"][2]["dsc"] == pytest.approx(0.7)
    assert scores["dsc"] == pytest.approx(0.85)
    expected_nsd_2 = 1 - 2 * (2 * SQRT3 / 8 + 9 * SQRT2 / 2) / square_slab_area(10)
    assert scores["per_label"][2]["nsd"] == pytest.approx(expected_nsd_2, rel=1e-12)
    assert scores["nsd"] == pytest.approx((1.0 + expected_nsd_2) / 2, rel=1e-12)


def test_case_nsd_is_zero_when_case_dsc_is_at_most_point_two():
    gt = square((30, 40), 5, 5, 10)
    touching = square((30, 40), 5, 13, 10)  # DSC 0.2 exactly
    assert normalized_surface_dice(touching, gt) > 0.0
    scores = case_scores(touching, gt)
    assert scores["dsc"] == pytest.approx(0.2)
    assert scores["nsd"] == 0.0
    assert scores["per_label"][1]["nsd"] == 0.0
    closer = square((30, 40), 5, 12, 10)  # DSC 0.3
    assert case_scores(closer, gt)["nsd"] > 0.0


def test_rule_uses_the_case_mean_not_each_label():
    gts = np.zeros((40, 40), np.uint8)
    gts[2:12, 2:12] = 1
    gts[20:30, 20:30] = 2
    segs = np.zeros_like(gts)
    segs[2:12, 2:12] = 1  # label 1 perfect, label 2 missed: mean DSC 0.5
    scores = case_scores(segs, gts)
    assert scores["dsc"] == pytest.approx(0.5)
    assert scores["per_label"][2]["nsd"] == 0.0
    assert scores["nsd"] == pytest.approx(0.5)


def test_label_missing_from_both_makes_the_case_nan_and_nsd_zero():
    gts = np.zeros((20, 20), np.uint8)
    gts[2:8, 2:8] = 1
    gts[10:16, 10:16] = 3  # no label 2 anywhere
    scores = case_scores(gts.copy(), gts)
    assert math.isnan(scores["per_label"][2]["dsc"])
    assert math.isnan(scores["dsc"])
    assert scores["nsd"] == 0.0


def test_labels_above_the_ground_truth_maximum_are_ignored():
    gts = square((20, 20), 2, 2, 6)
    segs = gts.copy()
    segs[12:18, 12:18] = 5
    scores = case_scores(segs, gts)
    assert set(scores["per_label"]) == {1}
    assert scores["dsc"] == 1.0 and scores["nsd"] == 1.0


def test_empty_ground_truth_scores_nan_dsc_and_zero_nsd():
    gts = np.zeros((10, 10), np.uint8)
    scores = case_scores(square((10, 10), 1, 1, 3), gts)
    assert math.isnan(scores["dsc"]) and scores["nsd"] == 0.0 and scores["per_label"] == {}


def test_empty_prediction_scores_zero():
    gts = square((10, 10), 1, 1, 3)
    scores = case_scores(np.zeros_like(gts), gts)
    assert scores["dsc"] == 0.0 and scores["nsd"] == 0.0


def test_case_scores_3d_uses_spacing():
    gts = box((10, 11, 12), (2, 3, 3), (4, 5, 6))
    segs = box((10, 11, 12), (3, 3, 3), (4, 5, 6))
    fine = case_scores(segs, gts, (1.0, 1.0, 1.0))
    coarse = case_scores(segs, gts, (3.0, 2.5, 2.5))
    assert fine["dsc"] == coarse["dsc"] == pytest.approx(0.75)
    assert fine["nsd"] == pytest.approx(1.0)
    assert coarse["nsd"] == pytest.approx(normalized_surface_dice(segs, gts, (3.0, 2.5, 2.5)))
    assert coarse["nsd"] < 0.9


def test_case_scores_rejects_mismatched_shapes_and_bad_rank():
    with pytest.raises(ValueError, match="same shape"):
        case_scores(np.zeros((4, 4), np.uint8), np.zeros((4, 5), np.uint8))
    with pytest.raises(ValueError, match=r"\(H, W\) or \(D, H, W\)"):
        case_scores(np.zeros(4, np.uint8), np.zeros(4, np.uint8))
