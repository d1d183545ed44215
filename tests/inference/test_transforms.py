"""The 256 frame: fixture parity of every transform, round trips and odd shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import parity_fixture_paths
from napari_swinlitemedsam.inference import transforms

FIXTURES = parity_fixture_paths()
FIXTURE_IDS = [path.name for path in FIXTURES]


def resize_atol(expected: np.ndarray) -> float:
    """Tolerance for bilinear resizes of float32 logits against the fixture's: 2e-5 of their
    largest magnitude. torch's resize kernels round differently across versions (torch 2.5
    against the 2.13 the fixtures agree with exactly: up to 5.2e-6 of the magnitude on the
    Swin fixture), about 4x margin."""
    return 2e-5 * float(np.abs(expected).max())


def _is_2d(fixture) -> bool:
    return "image_256" in fixture and fixture["imgs"].ndim == 3 and fixture["imgs"].shape[-1] == 3


def _fixture_boxes_256(fixture) -> np.ndarray:
    return fixture["box_256"] if "box_256" in fixture else fixture["boxes_256"]


# ---------------------------------------------------------------- fixture parity (2D)


@pytest.mark.parametrize("path", FIXTURES, ids=FIXTURE_IDS)
def test_prepare_image_equals_reference_encoder_input(path):
    fixture = np.load(path)
    if not _is_2d(fixture):
        pytest.skip("not a 2D fixture")
    image_256, new_size = transforms.prepare_image(fixture["imgs"])
    assert image_256.dtype == np.float32 and image_256.shape == (3, 256, 256)
    np.testing.assert_array_equal(image_256, fixture["image_256"][0])
    assert new_size == tuple(fixture["new_size"])
    assert tuple(fixture["imgs"].shape[:2]) == tuple(fixture["original_size"])


@pytest.mark.parametrize("path", FIXTURES, ids=FIXTURE_IDS)
def test_boxes_to_256_equals_reference(path):
    fixture = np.load(path)
    if not _is_2d(fixture):
        pytest.skip("not a 2D fixture")
    boxes_256 = transforms.boxes_to_256(fixture["boxes"], tuple(fixture["original_size"]))
    assert boxes_256.dtype == np.int64
    np.testing.assert_array_equal(boxes_256, _fixture_boxes_256(fixture))


@pytest.mark.parametrize("path", FIXTURES, ids=FIXTURE_IDS)
def test_logits_and_masks_at_original_size_equal_reference(path):
    fixture = np.load(path)
    if not _is_2d(fixture):
        pytest.skip("not a 2D fixture")
    new_size, original_size = tuple(fixture["new_size"]), tuple(fixture["original_size"])
    low_res = fixture["low_res_logits"][:, 0]  # (N, 256, 256)
    expected_logits = fixture["logits_original_size"].reshape(len(low_res), *original_size)
    logits = transforms.logits_to_original(low_res, new_size, original_size)
    assert isinstance(logits, np.ndarray) and logits.dtype == np.float32
    atol = resize_atol(expected_logits)
    np.testing.assert_allclose(logits, expected_logits, rtol=0, atol=atol)

    masks = transforms.logits_to_masks(low_res, new_size, original_size)
    expected_masks = (fixture["mask"] if "mask" in fixture else fixture["masks"]).reshape(
        masks.shape
    )
    assert masks.dtype == np.bool_
    # a pixel may flip only where the reference logit lies within the resize's rounding of 0
    flipped = masks != expected_masks.astype(bool)
    assert not (flipped & (np.abs(expected_logits) > atol)).any()


@pytest.mark.parametrize("path", FIXTURES, ids=FIXTURE_IDS)
def test_logits_torch_input_with_channel_axis(path):
    fixture = np.load(path)
    if not _is_2d(fixture):
        pytest.skip("not a 2D fixture")
    new_size, original_size = tuple(fixture["new_size"]), tuple(fixture["original_size"])
    low_res = torch.from_numpy(fixture["low_res_logits"].copy())  # (N, 1, 256, 256)
    logits = transforms.logits_to_original(low_res, new_size, original_size)
    assert isinstance(logits, torch.Tensor) and logits.shape == (len(low_res), 1, *original_size)
    expected = fixture["logits_original_size"].reshape(logits.shape)
    np.testing.assert_allclose(logits.numpy(), expected, rtol=0, atol=resize_atol(expected))


# ---------------------------------------------------------------- fixture parity (3D)


def _fixtures_3d():
    return [p for p in FIXTURES if "slice_boxes_256" in np.load(p)]


@pytest.mark.parametrize("path", _fixtures_3d(), ids=[p.name for p in _fixtures_3d()])
def test_middle_slice_encoder_inputs_equal_reference(path):
    fixture = np.load(path)
    for index, z_middle in enumerate(fixture["z_middle"]):
        image_256, new_size = transforms.prepare_image(fixture["imgs"][z_middle])
        np.testing.assert_array_equal(image_256, fixture["mid_image_256"][index])
        assert new_size == transforms.longest_side_size(*fixture["imgs"].shape[1:])


@pytest.mark.parametrize("path", _fixtures_3d(), ids=[p.name for p in _fixtures_3d()])
def test_propagated_slice_boxes_equal_reference(path):
    """Each slice's box comes from the neighbouring slice's mask (segs == k where object k
    was not overwritten), resized into the frame holding the value k, +3 px per side."""
    fixture = np.load(path)
    segs, slice_boxes, pixels = (
        fixture["segs"],
        fixture["slice_boxes_256"],
        fixture["slice_mask_pixels"],
    )
    size = segs.shape[1:]
    checked = 0
    for index, box_3d in enumerate(fixture["boxes"]):
        label, z_middle = index + 1, int(fixture["z_middle"][index])
        middle_box = transforms.boxes_to_256(box_3d[[0, 1, 3, 4]], size)
        for z in np.flatnonzero(slice_boxes[index, :, 0] >= 0):
            if z == z_middle:
                np.testing.assert_array_equal(slice_boxes[index, z], middle_box)
                continue
            previous = z - 1 if z > z_middle else z + 1
            mask = segs[previous] == label
            if mask.sum() != pixels[index, previous]:
                continue  # partly overwritten by a later object: not recoverable from segs
            box = transforms.mask_to_box_256(transforms.mask_to_256(mask.astype(np.uint8) * label))
            np.testing.assert_array_equal(slice_boxes[index, z], middle_box if box is None else box)
            checked += 1
    assert checked > 0


# ---------------------------------------------------------------- sizes and images


@pytest.mark.parametrize(
    "size, expected",
    [
        ((300, 220), (256, 188)),
        ((512, 512), (256, 256)),
        ((1, 1), (256, 256)),
        ((2, 3), (171, 256)),
        ((3, 2), (256, 171)),
        ((1000, 3), (256, 1)),
        ((100000, 1), (256, 1)),  # would round to 0 columns; kept at 1
        ((256, 100), (256, 100)),
    ],
)
def test_longest_side_size(size, expected):
    assert transforms.longest_side_size(*size) == expected


@given(st.integers(1, 5000), st.integers(1, 5000))
def test_longest_side_size_properties(height, width):
    new_height, new_width = transforms.longest_side_size(height, width)
    assert max(new_height, new_width) == 256
    assert min(new_height, new_width) >= 1
    assert abs(new_height - height * 256 / max(height, width)) <= 0.5 + 1e-9 or new_height == 1
    assert abs(new_width - width * 256 / max(height, width)) <= 0.5 + 1e-9 or new_width == 1


@pytest.mark.parametrize(
    "shape", [(1, 1), (2, 3), (3, 2), (300, 7), (7, 300), (256, 256), (600, 401)]
)
@pytest.mark.parametrize("channels", [None, 3])
def test_prepare_image_odd_shapes(shape, channels):
    rng = np.random.default_rng(sum(shape))
    full = shape if channels is None else (*shape, channels)
    image = rng.integers(0, 256, full, dtype=np.uint8)
    image_256, (new_height, new_width) = transforms.prepare_image(image)
    assert image_256.shape == (3, 256, 256) and image_256.dtype == np.float32
    assert (new_height, new_width) == transforms.longest_side_size(*shape)
    assert np.isfinite(image_256).all()
    assert image_256.min() == 0.0 and image_256.max() <= 1.0
    assert not image_256[:, new_height:, :].any() and not image_256[:, :, new_width:].any()
    if image.min() != image.max():
        assert image_256.max() == 1.0


def test_grey_equals_repeated_rgb():
    grey = np.random.default_rng(3).integers(0, 256, (211, 97), dtype=np.uint8)
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    grey_256, grey_size = transforms.prepare_image(grey)
    rgb_256, rgb_size = transforms.prepare_image(rgb)
    np.testing.assert_array_equal(grey_256, rgb_256)
    assert grey_size == rgb_size


@pytest.mark.parametrize("value", [0, 7, 255])
def test_constant_image_normalises_to_zeros(value):
    image_256, _ = transforms.prepare_image(np.full((40, 30, 3), value, np.uint8))
    assert not image_256.any()


def test_normalisation_is_min_max_over_all_channels_in_float64():
    image = np.full((256, 256, 3), 3, np.uint8)
    image[0, 0] = (3, 10, 200)
    image[5, 7] = (50, 51, 52)
    image_256, new_size = transforms.prepare_image(image)  # 256 x 256: no resize, no padding
    assert new_size == (256, 256)
    expected = ((image.astype(np.float64) - 3) / 197).astype(np.float32).transpose(2, 0, 1)
    np.testing.assert_array_equal(image_256, expected)


@pytest.mark.parametrize(
    "image",
    [np.zeros((8, 8), np.float32), np.zeros((8, 8, 4), np.uint8), np.zeros((2, 8, 8, 3), np.uint8)],
)
def test_prepare_image_rejects_other_inputs(image):
    with pytest.raises(ValueError, match="to_rgb_uint8"):
        transforms.prepare_image(image)


# ---------------------------------------------------------------- boxes


def test_boxes_to_256_truncates_without_clipping():
    boxes = np.array([[56, 78, 82, 110], [-3, 0, 299, 301]])
    # scale 256/300: 56 -> 47.78 -> 47, -3 -> -2.56 -> -2 (toward zero), 301 -> 256.85 -> 256
    expected = np.array([[47, 66, 69, 93], [-2, 0, 255, 256]])
    np.testing.assert_array_equal(transforms.boxes_to_256(boxes, (300, 220)), expected)
    np.testing.assert_array_equal(transforms.boxes_to_256(boxes[0], (300, 220)), expected[0])
    np.testing.assert_array_equal(
        transforms.boxes_to_256(boxes.astype(np.float64) + 0.9, (300, 220))[0], [48, 67, 70, 94]
    )


@given(
    size=st.tuples(st.integers(1, 4000), st.integers(1, 4000)),
    fractions=st.lists(st.floats(0, 1), min_size=4, max_size=4),
)
def test_box_round_trip_stays_within_one_frame_pixel(size, fractions):
    box = np.array(fractions) * np.array([size[1], size[0], size[1], size[0]])
    box_256 = transforms.boxes_to_256(box, size)
    back = transforms.coords_from_256(box_256, size)
    scale = transforms.frame_scale(size)
    assert np.all(back <= box + 1e-9)
    assert np.all(box - back < 1 / scale + 1e-9)


def test_boxes_to_256_rejects_non_finite():
    with pytest.raises(ValueError):
        transforms.boxes_to_256(np.array([0, 0, np.nan, 4]), (10, 10))


# ---------------------------------------------------------------- logits and masks


def test_logits_identity_when_frame_is_the_image():
    logits = np.random.default_rng(0).normal(size=(2, 256, 256)).astype(np.float32)
    result = transforms.logits_to_original(logits, (256, 256), (256, 256))
    np.testing.assert_array_equal(result, logits)


@given(
    size=st.tuples(st.integers(1, 700), st.integers(1, 700)),
    value=st.floats(-50, 50, width=32),
)
@settings(max_examples=30, deadline=None)
def test_constant_logits_stay_constant_at_any_size(size, value):
    new_size = transforms.longest_side_size(*size)
    logits = np.full((1, 256, 256), value, np.float32)
    logits[:, new_size[0] :, :] = 1e6  # padding must be cropped away
    logits[:, :, new_size[1] :] = 1e6
    result = transforms.logits_to_original(logits, new_size, size)
    assert result.shape == (1, *size)
    np.testing.assert_allclose(result, value, rtol=1e-6, atol=1e-5)


def test_masks_are_sigmoid_above_half():
    logits = np.random.default_rng(1).normal(scale=3, size=(3, 256, 256)).astype(np.float32)
    masks = transforms.logits_to_masks(logits, (200, 256), (150, 192))
    resized = transforms.logits_to_original(logits, (200, 256), (150, 192))
    np.testing.assert_array_equal(masks, torch.sigmoid(torch.from_numpy(resized)).numpy() > 0.5)
    assert masks.shape == (3, 150, 192) and 0 < masks.mean() < 1


@pytest.mark.parametrize(
    "new_size, original_size", [((300, 10), (300, 10)), ((0, 10), (5, 5)), ((10, 10), (0, 3))]
)
def test_logits_reject_bad_sizes(new_size, original_size):
    with pytest.raises(ValueError):
        transforms.logits_to_original(np.zeros((1, 256, 256), np.float32), new_size, original_size)


def test_mask_to_box_256_margin_and_clipping():
    mask = np.zeros((256, 256), bool)
    assert transforms.mask_to_box_256(mask) is None
    mask[20, 10] = True
    np.testing.assert_array_equal(transforms.mask_to_box_256(mask), [7, 17, 13, 23])
    mask[:] = False
    mask[0, 0] = mask[255, 255] = True
    np.testing.assert_array_equal(transforms.mask_to_box_256(mask), [0, 0, 256, 256])
    np.testing.assert_array_equal(transforms.mask_to_box_256(mask, margin=0), [0, 0, 255, 255])


def test_mask_to_256_resizes_the_label_value():
    mask = np.zeros((512, 512), bool)
    mask[100, 200] = True  # one pixel: a quarter of a frame pixel
    assert transforms.mask_to_256(mask).max() == 0  # (1 + 2) >> 2 == 0: vanishes
    assert transforms.mask_to_256(mask.astype(np.uint8) * 2).max() == 1  # (2 + 2) >> 2 == 1
    np.testing.assert_array_equal(
        transforms.mask_to_box_256(transforms.mask_to_256(mask.astype(np.uint8) * 2)),
        [97, 47, 103, 53],
    )


def test_mask_to_256_pads_bottom_and_right():
    mask = np.ones((100, 40), bool)
    frame = transforms.mask_to_256(mask)
    assert frame.shape == (256, 256) and frame.dtype == np.uint8
    new_height, new_width = transforms.longest_side_size(100, 40)
    assert (frame[:new_height, :new_width] == 1).all()
    assert frame.sum() == new_height * new_width
    with pytest.raises(ValueError):
        transforms.mask_to_256(np.full((4, 4), 300))


def test_points_scale_into_the_frame_like_boxes_but_keep_their_fraction():
    points = np.array([[[10.5, 20.25], [511.0, 0.0]]])
    scaled = transforms.points_to_256(points, (256, 512))
    assert scaled.dtype == np.float32 and scaled.shape == (1, 2, 2)
    assert np.allclose(scaled, [[[5.25, 10.125], [255.5, 0.0]]])
    box = transforms.boxes_to_256(np.array([10, 20, 511, 100]), (256, 512))
    assert box.tolist() == [5, 10, 255, 50]  # boxes truncate, points do not
