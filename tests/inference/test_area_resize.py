"""Area resize: known OpenCV INTER_AREA outputs, independent oracles and invariants."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_swinlitemedsam.inference.area_resize import resize_area


def _pattern(height: int, width: int) -> np.ndarray:
    rows, cols = np.mgrid[:height, :width]
    return ((rows * 37 + cols * 91 + (rows * cols) % 7 * 13) % 256).astype(np.uint8)


# Outputs of cv2.resize(_pattern(h, w), (new_w, new_h), interpolation=cv2.INTER_AREA), identical
# under OpenCV 4.10.0 and 5.0.0: one upscale, one non-integer downscale, one 3x block mean.
KNOWN_OPENCV_OUTPUTS = {
    (5, 7, 9, 13): [
        [0, 13, 91, 117, 182, 111, 17, 69, 108, 173, 199, 58, 34],
        [7, 21, 101, 128, 195, 125, 32, 86, 126, 156, 168, 73, 57],
        [37, 52, 141, 171, 245, 180, 93, 152, 197, 88, 45, 134, 149],
        [52, 67, 161, 163, 168, 149, 123, 165, 196, 91, 49, 143, 158],
        [74, 91, 191, 151, 52, 102, 169, 184, 195, 96, 56, 156, 173],
        [96, 114, 221, 184, 90, 120, 160, 123, 95, 72, 62, 169, 187],
        [111, 130, 241, 205, 115, 132, 154, 82, 28, 56, 67, 178, 197],
        [140, 131, 76, 81, 93, 145, 215, 107, 26, 113, 148, 206, 216],
        [148, 132, 35, 50, 87, 148, 230, 113, 26, 128, 169, 214, 221],
    ],
    (11, 13, 4, 5): [
        [105, 130, 125, 113, 133],
        [127, 123, 157, 144, 118],
        [134, 116, 117, 101, 147],
        [137, 134, 150, 126, 129],
    ],
    (9, 12, 3, 4): [[113, 120, 125, 123], [129, 132, 161, 136], [143, 113, 91, 147]],
}


@pytest.mark.parametrize("sizes", sorted(KNOWN_OPENCV_OUTPUTS))
def test_matches_known_opencv_outputs(sizes):
    height, width, new_height, new_width = sizes
    result = resize_area(_pattern(height, width), new_height, new_width)
    np.testing.assert_array_equal(result, np.array(KNOWN_OPENCV_OUTPUTS[sizes], dtype=np.uint8))


def test_upscale_of_a_tiny_image_to_the_frame_matches_opencv_summary():
    # cv2 INTER_AREA of the 3x2 pattern to 256x171: total, and samples of row 0 and column 100.
    result = resize_area(_pattern(3, 2), 256, 171)
    assert int(result.astype(np.int64).sum()) == 3896063
    assert result[0, ::17].tolist() == [0, 0, 0, 0, 0, 46, 91, 91, 91, 91, 91]
    assert result[::23, 100].tolist() == [91, 91, 91, 91, 141, 141, 141, 141, 191, 191, 191, 191]


def test_two_by_two_blocks_round_half_up():
    image = np.array([[0, 1, 1, 1], [0, 1, 2, 2], [255, 254, 3, 3], [255, 255, 3, 4]], np.uint8)
    expected = (image.reshape(2, 2, 2, 2).astype(int).sum(axis=(1, 3)) + 2) // 4
    np.testing.assert_array_equal(resize_area(image, 2, 2), expected)
    colour = np.stack([image, image[::-1], image.T], axis=-1)
    result = resize_area(colour, 2, 2)
    assert result.shape == (2, 2, 3)
    np.testing.assert_array_equal(result[:, :, 0], expected)


def _exact_area_weights(source: int, target: int) -> np.ndarray:
    scale = source / target
    starts = np.arange(target)[:, None] * scale
    overlap = np.minimum(starts + scale, np.arange(source)[None, :] + 1) - np.maximum(
        starts, np.arange(source)[None, :]
    )
    return np.clip(overlap, 0, None) / scale


@settings(max_examples=60, deadline=None)
@given(
    height=st.integers(2, 60),
    width=st.integers(2, 60),
    fraction=st.floats(0.2, 0.99),
    seed=st.integers(0, 2**32 - 1),
)
def test_downscale_is_the_rounded_area_average(height, width, fraction, seed):
    new_height, new_width = max(1, int(height * fraction)), max(1, int(width * fraction))
    image = np.random.default_rng(seed).integers(0, 256, (height, width), dtype=np.uint8)
    exact = (
        _exact_area_weights(height, new_height) @ image @ _exact_area_weights(width, new_width).T
    )
    result = resize_area(image, new_height, new_width)
    assert np.abs(result - exact).max() <= 0.5 + 1e-3


@settings(max_examples=60, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 40), st.integers(1, 40)),
    new_shape=st.tuples(st.integers(1, 300), st.integers(1, 300)),
    channels=st.sampled_from([None, 1, 3]),
    seed=st.integers(0, 2**32 - 1),
)
def test_output_stays_within_the_input_range(shape, new_shape, channels, seed):
    full_shape = shape if channels is None else (*shape, channels)
    image = np.random.default_rng(seed).integers(0, 256, full_shape, dtype=np.uint8)
    result = resize_area(image, *new_shape)
    assert result.dtype == np.uint8
    assert result.shape == (*new_shape, *full_shape[2:])
    assert image.min() <= result.min() and result.max() <= image.max()


@settings(max_examples=40, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 30), st.integers(1, 30)),
    new_shape=st.tuples(st.integers(1, 260), st.integers(1, 260)),
    value=st.integers(0, 255),
)
def test_constant_images_stay_constant(shape, new_shape, value):
    result = resize_area(np.full(shape, value, np.uint8), *new_shape)
    assert (result == value).all()


def test_same_size_is_a_copy():
    image = _pattern(6, 9)
    result = resize_area(image, 6, 9)
    np.testing.assert_array_equal(result, image)
    assert result is not image


@pytest.mark.parametrize(
    "image, size, error",
    [
        (np.zeros((4, 4), np.float32), (2, 2), TypeError),
        (np.zeros((4,), np.uint8), (2, 2), ValueError),
        (np.zeros((4, 4), np.uint8), (0, 2), ValueError),
        (np.zeros((0, 4), np.uint8), (2, 2), ValueError),
    ],
)
def test_rejects_bad_input(image, size, error):
    with pytest.raises(error):
        resize_area(image, *size)
