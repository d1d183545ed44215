"""Box-derived points and scribble: exact reference reproduction, invariants, degenerate boxes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from conftest import parity_fixture_paths
from napari_swinlitemedsam.inference.box_prompts import (
    box_points,
    box_scribble,
    foreground_map,
    prompt_rng,
)
from napari_swinlitemedsam.inference.prompt_random import (
    GeneratorSource,
    ReferenceRandomSource,
    as_random_source,
)

PROMPT_FIXTURES = [p for p in parity_fixture_paths() if "points_256" in np.load(p)]


@pytest.mark.parametrize("path", PROMPT_FIXTURES, ids=[p.name for p in PROMPT_FIXTURES])
def test_reference_random_source_reproduces_fixture_prompts(path):
    """Seeded as the reference script is (numpy 42, torch state stored in the fixture),
    the generators give the stored points and scribble exactly."""
    fixture = np.load(path)
    torch_generator = torch.Generator()
    torch_generator.set_state(torch.from_numpy(fixture["torch_rng_state_before_prompts"].copy()))
    source = ReferenceRandomSource(np.random.RandomState(42), torch_generator)
    box_256, image_256 = fixture["box_256"][0], fixture["image_256"][0]

    points = box_points(box_256, image_256, source)
    scribble = box_scribble(box_256, image_256, source)

    assert points.dtype == np.float32 and points.shape == (4, 2)
    np.testing.assert_array_equal(points, fixture["points_256"])
    assert scribble.dtype == np.float32 and scribble.shape == (256, 256)
    np.testing.assert_array_equal(scribble, fixture["scribble_256"])


def _foreground(seed: int, density: float, region) -> np.ndarray:
    """(256, 256) foreground map: random pixels of a given density inside a rectangle."""
    top, left, bottom, right = region
    image = np.zeros((256, 256), np.float32)
    noise = np.random.default_rng(seed).random((256, 256)) < density
    image[top:bottom, left:right] = noise[top:bottom, left:right]
    return image


boxes = st.tuples(
    st.integers(0, 256), st.integers(0, 256), st.integers(0, 256), st.integers(0, 256)
).map(lambda c: (min(c[0], c[2]), min(c[1], c[3]), max(c[0], c[2]), max(c[1], c[3])))
regions = st.tuples(
    st.integers(0, 128), st.integers(0, 128), st.integers(128, 256), st.integers(128, 256)
)


@settings(max_examples=60, deadline=None)
@given(box=boxes, seed=st.integers(0, 2**32 - 1), density=st.floats(0, 1), region=regions)
def test_points_lie_in_their_box_quadrants(box, seed, density, region):
    image = _foreground(seed, density, region)
    x_min, y_min, x_max, y_max = box
    mid_x, mid_y = (x_min + x_max) // 2, (y_min + y_max) // 2
    points = box_points(np.array(box), image, prompt_rng(box))
    assert points.shape == (4, 2) and points.dtype == np.float32
    assert np.array_equal(points, np.round(points))
    for (x, y), (left_half, top_half) in zip(points, [(1, 1), (1, 0), (0, 0), (0, 1)]):
        if (x, y) == (mid_x, mid_y):
            continue  # the fallback for a quadrant without foreground
        assert x_min <= x < mid_x if left_half else mid_x <= x < x_max
        assert y_min <= y < mid_y if top_half else mid_y <= y < y_max


def test_points_fall_back_to_the_centre_without_foreground():
    points = box_points(np.array([10, 20, 50, 81]), np.zeros((3, 256, 256)), prompt_rng([1]))
    np.testing.assert_array_equal(points, [[30, 50]] * 4)


def test_point_coordinates_come_from_foreground_rows_and_columns():
    # Box 20..140 x 30..110, centre (80, 70); whatever the shrink, pixels this close to the
    # centre stay inside: one foreground pixel per quadrant, so each point is that pixel.
    image = np.zeros((256, 256))
    for x, y in [(79, 69), (79, 71), (81, 70), (80, 68)]:
        image[y, x] = 1.0
    points = box_points([20, 30, 140, 110], image, prompt_rng([2]))
    np.testing.assert_array_equal(points, [[79, 69], [79, 71], [81, 70], [80, 68]])


@settings(max_examples=60, deadline=None)
@given(box=boxes, seed=st.integers(0, 2**32 - 1), density=st.floats(0, 1), region=regions)
def test_scribble_is_one_component_inside_box_and_foreground(box, seed, density, region):
    image = _foreground(seed, density, region)
    scribble = box_scribble(np.array(box), image, prompt_rng(box, image_key=seed))
    assert scribble.shape == (256, 256) and scribble.dtype == np.float32
    assert set(np.unique(scribble)) <= {0.0, 1.0}
    drawn = scribble > 0
    if not drawn.any():
        return
    x_min, y_min, x_max, y_max = box
    rows, cols = np.nonzero(drawn)
    assert x_min <= cols.min() and cols.max() < x_max
    assert y_min <= rows.min() and rows.max() < y_max
    assert (image[drawn] > 0).all()
    assert drawn.sum() > 5
    _, count = ndimage.label(drawn, structure=np.ones((3, 3)))
    assert count == 1


def test_scribble_is_drawn_on_a_full_foreground_box():
    image = np.ones((3, 256, 256), np.float32)
    drawn = [
        box_scribble([60, 60, 200, 200], image, prompt_rng([60, 60, 200, 200], z)) for z in range(5)
    ]
    assert all(s.sum() > 5 for s in drawn)
    assert len({s.tobytes() for s in drawn}) > 1  # different slices, different scribbles


def test_scribble_is_empty_without_foreground():
    scribble = box_scribble([10, 10, 100, 100], np.zeros((3, 256, 256)), prompt_rng([0]))
    assert not scribble.any()


@settings(max_examples=30, deadline=None)
@given(box=boxes, z=st.integers(0, 500), key=st.binary(max_size=16))
def test_same_box_same_prompts(box, z, key):
    image = _foreground(7, 0.6, (0, 0, 256, 256))
    first = prompt_rng(box, z, key)
    second = prompt_rng(box, z, key)
    np.testing.assert_array_equal(box_points(box, image, first), box_points(box, image, second))
    np.testing.assert_array_equal(box_scribble(box, image, first), box_scribble(box, image, second))


def test_prompt_rng_depends_on_box_slice_and_key():
    def draw(*args):
        return prompt_rng(*args).integers(0, 2**62, 4).tolist()

    base = draw([1, 2, 3, 4], 0, 0)
    assert draw([1, 2, 3, 4], 0, 0) == base
    assert draw(np.array([1.0, 2.0, 3.0, 4.0]), 0, 0) == base  # same values, other dtype
    assert draw([1, 2, 3, 5], 0, 0) != base
    assert draw([1, 2, 3, 4], 1, 0) != base
    assert draw([1, 2, 3, 4], 0, 1) != base
    assert draw([1, 2, 3, 4], 0, b"image-a") != draw([1, 2, 3, 4], 0, b"image-b")
    with pytest.raises(ValueError):
        prompt_rng([0, 0, np.inf, 1])


@pytest.mark.parametrize(
    "box",
    [
        [50, 50, 50, 50],  # a point
        [50, 50, 51, 51],  # one pixel
        [50, 50, 50, 120],  # zero width
        [50, 50, 120, 50],  # zero height
        [0, 0, 256, 256],  # the whole frame
        [200, 240, 256, 256],  # at the edge
        [250, 250, 256, 256],
        [-20, -5, 30, 300],  # outside the frame
        [120, 130, 100, 90],  # inverted
        [10.5, 20.25, 99.9, 140.0],  # float box (the Swin 3D loop scales without truncating)
        np.array([[5, 6, 70, 80]]),  # (1, 4)
    ],
)
@pytest.mark.parametrize("fill", ["full", "empty", "noise", "padded"])
def test_degenerate_boxes_never_crash(box, fill):
    image = np.zeros((3, 256, 256), np.float32)
    if fill == "full":
        image[:] = 1
    elif fill == "noise":
        image[:] = np.random.default_rng(0).random((256, 256)) > 0.8
    elif fill == "padded":
        image[:, :, :188] = np.random.default_rng(1).random((256, 188))
    rng = np.random.default_rng(5)
    points = box_points(box, image, rng)
    scribble = box_scribble(box, image, rng)
    assert points.shape == (4, 2) and np.isfinite(points).all()
    assert ((points >= 0) & (points <= 256)).all()
    assert scribble.shape == (256, 256)
    if fill == "padded":
        assert not scribble[:, 188:].any()


def test_reference_source_without_torch_generator_is_deterministic():
    image = np.ones((3, 256, 256))
    first = box_scribble([40, 40, 140, 140], image, ReferenceRandomSource(np.random.RandomState(3)))
    second = box_scribble(
        [40, 40, 140, 140], image, ReferenceRandomSource(np.random.RandomState(3))
    )
    np.testing.assert_array_equal(first, second)
    assert first.sum() > 5


def test_random_source_adapter():
    generator = np.random.default_rng(0)
    assert isinstance(as_random_source(generator), GeneratorSource)
    source = ReferenceRandomSource(np.random.RandomState(0))
    assert as_random_source(source) is source
    with pytest.raises(TypeError, match="ReferenceRandomSource"):
        as_random_source(np.random.RandomState(0))
    with pytest.raises(TypeError):
        as_random_source(42)


def test_reference_source_draws_like_numpy_global_functions():
    source = ReferenceRandomSource(np.random.RandomState(11))
    np.random.seed(11)
    try:
        expected_int = np.random.randint(3, 10, (1,))[0]
        expected_choice = np.random.choice(np.arange(100, 117))
        expected_uniform = np.random.uniform(-15, 15)
        expected_normal = np.random.normal(0, 2.5)
        expected_order = np.arange(9)
        np.random.shuffle(expected_order)
    finally:
        np.random.seed(None)
    assert source.integer(3, 10) == expected_int
    assert 100 + source.pick(17) == expected_choice
    assert source.uniform(-15, 15) == expected_uniform
    assert source.normal(2.5) == expected_normal
    np.testing.assert_array_equal(source.permutation(9), expected_order)


def test_foreground_map_shapes():
    image = np.zeros((3, 256, 256), np.float32)
    image[1, 3, 4] = 0.5
    assert foreground_map(image).sum() == 1 and foreground_map(image)[3, 4]
    assert foreground_map(image[1]).sum() == 1
    with pytest.raises(ValueError):
        foreground_map(np.zeros((256, 256, 3)))
