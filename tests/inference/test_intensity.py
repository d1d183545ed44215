"""Intensity policy: uint8 pass-through, CT windows, the organisers' non-CT rule, edge cases."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis.extra import numpy as hnp

from napari_swinlitemedsam.inference.intensity import (
    CT_WINDOW_PRESETS,
    guess_modality,
    to_rgb_uint8,
    to_uint8,
    window_bounds,
)


@pytest.mark.parametrize("modality", ["auto", "ct", "mr", "microscopy", "uint8"])
def test_uint8_passes_through_unchanged(modality):
    image = np.random.default_rng(0).integers(0, 256, (17, 9, 3), dtype=np.uint8)
    result = to_uint8(image, modality=modality)
    assert result is image


def test_bool_becomes_0_and_255():
    mask = np.array([[True, False], [False, True]])
    np.testing.assert_array_equal(to_uint8(mask), [[255, 0], [0, 255]])


def test_window_presets():
    assert window_bounds(None) == (-160.0, 240.0)  # soft tissue W400 L40
    assert window_bounds("lung") == (-1350.0, 150.0)
    assert window_bounds("Bone") == (-500.0, 1300.0)
    assert window_bounds("brain") == (0.0, 80.0)
    assert window_bounds("soft-tissue") == window_bounds("soft_tissue")
    assert window_bounds((-10, 10.5)) == (-10.0, 10.5)
    assert set(CT_WINDOW_PRESETS) == {"soft_tissue", "lung", "bone", "brain"}


@pytest.mark.parametrize("window", ["liver-ish", (5, 5), (1,), "", (np.nan, 3)])
def test_bad_windows_are_rejected(window):
    with pytest.raises(ValueError):
        window_bounds(window)


def test_ct_soft_tissue_window_maps_bounds_linearly():
    hu = np.array([[-1024, -160, 40], [240, 1000, 3071]], dtype=np.int16)
    assert guess_modality(hu) == "ct"
    expected = np.array([[0, 0, 127], [255, 255, 255]], np.uint8)  # 200/400*255 = 127.5 -> 127
    np.testing.assert_array_equal(to_uint8(hu), expected)
    np.testing.assert_array_equal(to_uint8(hu, modality="ct"), expected)
    np.testing.assert_array_equal(to_uint8(hu.astype(np.float64)), expected)


def test_ct_window_is_the_same_for_a_crop_inside_the_window():
    """Scaling by the bounds, not by the crop's own range, keeps slices consistent."""
    crop = np.array([[0, 20], [40, 60]], dtype=np.int16)
    np.testing.assert_array_equal(
        to_uint8(crop, modality="ct"),
        ((crop + 160) / 400 * 255).astype(np.uint8),
    )


def test_explicit_window_overrides_modality():
    image = np.array([[0, 50, 100, 150]], np.uint16)
    np.testing.assert_array_equal(to_uint8(image, window=(50, 150)), [[0, 0, 127, 255]])
    np.testing.assert_array_equal(
        to_uint8(np.array([[0, 10, 20]], np.uint8), window=(0, 20)), [[0, 127, 255]]
    )
    with pytest.raises(ValueError):
        to_uint8(image, modality="uint8", window="lung")


def _organisers_non_ct_rule(image: np.ndarray) -> np.ndarray:
    low, high = np.percentile(image[image > 0], 0.5), np.percentile(image[image > 0], 99.5)
    clipped = np.clip(image, low, high)
    scaled = (clipped - clipped.min()) / (clipped.max() - clipped.min()) * 255.0
    scaled[image == 0] = 0
    return np.uint8(scaled)


@settings(max_examples=40, deadline=None)
@given(
    image=hnp.arrays(np.uint16, hnp.array_shapes(min_dims=2, max_dims=3, min_side=2, max_side=12)),
)
def test_non_ct_rule_matches_the_organisers_formula(image):
    positive = image[image > 0]
    if positive.size == 0 or np.percentile(positive, 0.5) == np.percentile(positive, 99.5):
        return  # the formula divides by zero there; covered by the constant-image tests
    clipped = np.clip(image, np.percentile(positive, 0.5), np.percentile(positive, 99.5))
    if clipped.min() == clipped.max():
        return
    np.testing.assert_array_equal(to_uint8(image), _organisers_non_ct_rule(image))
    np.testing.assert_array_equal(to_uint8(image, modality="mr"), _organisers_non_ct_rule(image))


def test_non_ct_rule_keeps_zero_and_reaches_full_range():
    image = np.random.default_rng(2).integers(0, 60000, (64, 64)).astype(np.uint16)
    image[:5] = 0
    result = to_uint8(image, modality="microscopy")
    assert (result[:5] == 0).all()
    assert result.max() == 255 and result[5:].min() == 0


def test_float_unit_range_uses_the_full_byte_range():
    image = np.linspace(0, 1, 1000, dtype=np.float32).reshape(20, 50)
    assert guess_modality(image) == "mr"
    result = to_uint8(image)
    assert result.dtype == np.uint8 and result.min() == 0 and result.max() == 255
    assert np.all(np.diff(result.ravel().astype(int)) >= 0)  # monotone


@pytest.mark.parametrize("value", [0, 7, 1e-3, -3.0])
def test_constant_images_are_sane(value):
    result = to_uint8(np.full((6, 5), value, np.float64))
    assert result.dtype == np.uint8 and result.shape == (6, 5)
    assert len(np.unique(result)) == 1
    assert result[0, 0] == (0 if value == 0 else 255)


def test_two_level_image_becomes_black_and_white():
    image = np.zeros((4, 4), np.uint16)
    image[1:3, 1:3] = 7
    np.testing.assert_array_equal(to_uint8(image), (image > 0) * 255)


def test_non_finite_values_become_the_finite_minimum():
    image = np.array([[np.nan, 1.0, 2.0], [np.inf, -np.inf, 3.0]])
    result = to_uint8(image)
    np.testing.assert_array_equal(result, to_uint8(np.array([[1.0, 1, 2], [1, 1, 3]])))
    assert not np.isnan(result.astype(float)).any()
    np.testing.assert_array_equal(to_uint8(np.full((2, 2), np.nan)), np.zeros((2, 2), np.uint8))


def test_negative_only_image_falls_back_to_all_voxels():
    image = -np.arange(1, 101, dtype=np.float64).reshape(10, 10)
    result = to_uint8(image)
    assert result.max() == 255 and result.min() == 0


def test_uint8_modality_casts_only_byte_values():
    np.testing.assert_array_equal(
        to_uint8(np.array([[0, 255]], np.int32), modality="uint8"), [[0, 255]]
    )
    for bad in (np.array([[0, 256]]), np.array([[0.5, 1.0]]), np.array([[-1, 3]])):
        with pytest.raises(ValueError):
            to_uint8(bad, modality="uint8")


def test_rejects_unknown_modality_and_dtype():
    with pytest.raises(ValueError):
        to_uint8(np.zeros((2, 2)), modality="pet")
    with pytest.raises(TypeError):
        to_uint8(np.zeros((2, 2), np.complex64))


def test_empty_image():
    assert to_uint8(np.zeros((0, 3), np.float32)).shape == (0, 3)


@pytest.mark.parametrize(
    "shape, expected_channels",
    [((5, 7), 3), ((5, 7, 1), 3), ((5, 7, 3), 3), ((5, 7, 4), 3)],
)
def test_to_rgb_uint8_shapes(shape, expected_channels):
    image = np.random.default_rng(4).integers(0, 256, shape, dtype=np.uint8)
    result = to_rgb_uint8(image)
    assert result.shape == (5, 7, expected_channels) and result.dtype == np.uint8
    if len(shape) == 2 or shape[2] == 1:
        grey = image.reshape(5, 7)
        for channel in range(3):
            np.testing.assert_array_equal(result[:, :, channel], grey)
    else:
        np.testing.assert_array_equal(result, image[:, :, :3])  # alpha dropped


def test_to_rgb_uint8_converts_other_dtypes_and_rejects_volumes():
    image = np.arange(20, dtype=np.uint16).reshape(4, 5) * 1000
    result = to_rgb_uint8(image)
    assert result.shape == (4, 5, 3) and result.max() == 255
    with pytest.raises(ValueError, match="slice"):
        to_rgb_uint8(np.zeros((4, 5, 6), np.uint8))
