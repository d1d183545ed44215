"""napari rectangles <-> inclusive pixel boxes: the one frame change between the GUI and the model."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_swinlitemedsam.annotation.layer_coordinates import (
    MIN_BOX_SIDE,
    RectangleError,
    box_to_rectangle,
    boxes_3d_to_rectangles,
    check_box_size,
    pixels_covered,
    point_to_pixel,
    rectangle_to_box,
)

coordinate = st.floats(min_value=-50, max_value=300, allow_nan=False, width=32)


@st.composite
def inclusive_boxes(draw, size=200):
    x0 = draw(st.integers(0, size - 1))
    y0 = draw(st.integers(0, size - 1))
    x1 = draw(st.integers(x0, size - 1))
    y1 = draw(st.integers(y0, size - 1))
    return np.array([x0, y0, x1, y1])


def centres_inside(vertices: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Brute force: pixels whose centre (row, col) lies in the rectangle's bounding box."""
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    r0, r1 = vertices[:, -2].min(), vertices[:, -2].max()
    c0, c1 = vertices[:, -1].min(), vertices[:, -1].max()
    return (rows >= r0) & (rows <= r1) & (cols >= c0) & (cols <= c1)


def test_edge_to_edge_rectangle_covers_exactly_the_pixels_inside():
    # Rows 2..4 and columns 5..9 drawn from pixel edge to pixel edge.
    vertices = np.array([[1.5, 4.5], [1.5, 9.5], [4.5, 9.5], [4.5, 4.5]])
    z, box = rectangle_to_box(vertices)
    assert z is None
    assert box.tolist() == [5, 2, 9, 4]
    assert box.dtype == np.int64


def test_3d_rectangle_gives_its_slice_and_vertex_order_does_not_matter():
    vertices = np.array([[7.0, 10.5, 3.5], [7.0, 10.5, 0.5], [7.0, 0.5, 0.5], [7.0, 0.5, 3.5]])
    z, box = rectangle_to_box(vertices)
    assert z == 7
    assert box.tolist() == [1, 1, 3, 10]


def test_thin_rectangle_gives_the_nearest_pixel():
    vertices = np.array([[3.1, 2.2], [3.1, 2.4], [3.3, 2.4], [3.3, 2.2]])
    assert rectangle_to_box(vertices)[1].tolist() == [2, 3, 2, 3]


def test_clipping_to_the_image_and_rectangles_off_the_image():
    vertices = np.array([[-10.0, -10.0], [-10.0, 5.5], [20.0, 5.5], [20.0, -10.0]])
    assert rectangle_to_box(vertices, image_shape=(8, 8))[1].tolist() == [0, 0, 5, 7]
    with pytest.raises(RectangleError, match="outside"):
        rectangle_to_box(vertices + 100, image_shape=(8, 8))


def test_a_click_sized_rectangle_is_no_box():
    # napari's rectangle for a click without dragging: about 2.5 pixels at 1:1 zoom.
    click = np.array([[40.2, 30.1], [40.2, 32.6], [42.7, 32.6], [42.7, 30.1]])
    _, box = rectangle_to_box(click, image_shape=(64, 64))
    with pytest.raises(RectangleError, match="click without dragging"):
        check_box_size(box)
    for thin in ([5, 5, 5, 40], [5, 5, 40, 6]):  # a line one or two pixels thick
        with pytest.raises(RectangleError, match="less than 3 on a side"):
            check_box_size(np.array(thin))
    smallest = np.array([5, 5, 5 + MIN_BOX_SIDE - 1, 5 + MIN_BOX_SIDE - 1])
    assert check_box_size(smallest) is smallest
    with pytest.raises(RectangleError):
        check_box_size(np.array([0, 0, 9, 9]), min_side=11)  # zoomed far out: clicks are larger


def test_a_box_mostly_off_the_image_is_clipped_then_judged_by_what_is_left():
    vertices = np.array([[-30.0, 10.0], [-30.0, 20.0], [0.6, 20.0], [0.6, 10.0]])
    _, box = rectangle_to_box(vertices, image_shape=(64, 64))
    assert box.tolist() == [10, 0, 20, 0]  # one row inside the image
    with pytest.raises(RectangleError, match="11x1 pixels"):
        check_box_size(box)


@pytest.mark.parametrize(
    "bad", [np.zeros((4,)), np.zeros((4, 4)), np.array([[0, np.nan], [1, 1], [2, 2], [3, 3]])]
)
def test_bad_rectangles_raise_a_clear_error(bad):
    with pytest.raises(RectangleError):
        rectangle_to_box(bad)


def test_inverted_box_is_refused():
    with pytest.raises(RectangleError, match="minimum corner"):
        box_to_rectangle([5, 5, 2, 2])


@settings(max_examples=200, deadline=None)
@given(inclusive_boxes(), st.one_of(st.none(), st.integers(0, 500)))
def test_round_trip_box_rectangle_box(box, z):
    rectangle = box_to_rectangle(box, slice_index=z)
    assert rectangle.shape == (4, 2 if z is None else 3)
    slice_index, back = rectangle_to_box(rectangle, image_shape=(200, 200))
    assert slice_index == z
    assert back.tolist() == box.tolist()
    # The rectangle of a box covers exactly the box's pixels.
    assert np.array_equal(centres_inside(rectangle, (200, 200)), pixels_covered(box, (200, 200)))


@settings(max_examples=300, deadline=None)
@given(coordinate, coordinate, coordinate, coordinate)
def test_box_holds_the_pixels_whose_centres_are_inside(r0, c0, r1, c1):
    vertices = np.array([[r0, c0], [r0, c1], [r1, c1], [r1, c0]], dtype=np.float64)
    shape = (200, 200)
    expected = centres_inside(vertices, shape)
    try:
        _, box = rectangle_to_box(vertices, image_shape=shape)
    except RectangleError:
        # Off the image: the whole rectangle must miss the image (no pixel, even the nearest).
        assert not expected.any()
        return
    covered = pixels_covered(box, shape)
    if expected.any():
        assert np.array_equal(covered, expected)
    else:
        # Too thin to hold a pixel centre: one pixel wide along the thin axis, beside the rectangle.
        x_min, y_min, x_max, y_max = box
        assert (x_max - x_min == 0) or (y_max - y_min == 0)
        assert min(r0, r1) - 1 <= y_min and y_max <= max(r0, r1) + 1
        assert min(c0, c1) - 1 <= x_min and x_max <= max(c0, c1) + 1


def test_challenge_3d_boxes_go_to_their_middle_slice():
    boxes = np.array([[10, 20, 4, 30, 40, 9], [0, 0, 0, 5, 5, 0]])
    rectangles = boxes_3d_to_rectangles(boxes)
    assert [rectangle_to_box(r)[0] for r in rectangles] == [6, 0]
    assert rectangle_to_box(rectangles[0])[1].tolist() == [10, 20, 30, 40]


def test_spacing_to_layer_scale():
    from napari_swinlitemedsam.annotation.layer_coordinates import spacing_to_layer_scale

    # SimpleITK order (x, y, z) with equal in-plane spacing is reversed to (z, y, x).
    assert spacing_to_layer_scale(np.array([0.8, 0.8, 2.5]), 3) == (2.5, 0.8, 0.8)
    # Already (z, y, x): kept.
    assert spacing_to_layer_scale(np.array([3.0, 1.0, 1.0]), 3) == (3.0, 1.0, 1.0)
    assert spacing_to_layer_scale(np.array([1.0, 1.0, 1.0]), 3) == (1.0, 1.0, 1.0)
    assert spacing_to_layer_scale(np.array([1.0, 1.0]), 2) is None
    assert spacing_to_layer_scale(None, 3) is None
    assert spacing_to_layer_scale(np.array([1.0, -1.0, 2.0]), 3) is None


def test_points_become_model_pixels_in_the_same_frame_as_boxes():
    assert point_to_pixel(np.array([12.0, 30.25])) == (None, 30.25, 12.0)
    assert point_to_pixel(np.array([4.6, 12.0, 30.0])) == (5, 30.0, 12.0)
    assert point_to_pixel(np.array([4.4, 12.0, 30.0]))[0] == 4
    # A click at a pixel's centre lies in the box that covers that pixel.
    _, box = rectangle_to_box(box_to_rectangle([30, 12, 30, 12]))
    _, x, y = point_to_pixel(np.array([12.0, 30.0]))
    assert box[0] <= x <= box[2] and box[1] <= y <= box[3]
    with pytest.raises(RectangleError):
        point_to_pixel(np.zeros(4))
