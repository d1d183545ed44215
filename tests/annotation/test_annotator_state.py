"""Box <-> object bookkeeping of the annotator (no Qt, no napari)."""

from __future__ import annotations

import numpy as np

from napari_swinlitemedsam.annotation.annotator_state import AnnotatorState, ClickPoint, ShapeBox


def box(*values):
    return np.array(values, dtype=np.int64)


def test_new_boxes_get_ids_above_the_labels_and_never_reuse_ids():
    state = AnnotatorState()
    sync = state.sync_boxes([ShapeBox(0, None, box(1, 1, 5, 5))], labels_max=7)
    assert sync.ids == [8] and sync.added == [(8, None)]
    sync = state.sync_boxes(
        [ShapeBox(8, None, box(1, 1, 5, 5)), ShapeBox(0, None, box(10, 10, 20, 20))], labels_max=8
    )
    assert sync.ids == [8, 9] and sync.added == [(9, None)] and not sync.moved
    # Object 9 deleted; the next new box does not get 9 back even though the labels max is 8.
    sync = state.sync_boxes([ShapeBox(8, None, box(1, 1, 5, 5))], labels_max=8)
    assert sync.removed == [(9, None)] and sync.deleted_objects == [9]
    sync = state.sync_boxes(
        [ShapeBox(8, None, box(1, 1, 5, 5)), ShapeBox(0, None, box(2, 2, 3, 3))], 8
    )
    assert sync.ids == [8, 10]
    # Another image with its own, empty masks layer: ids start again from that layer.
    state.reset()
    state.forget_issued_ids()
    assert state.sync_boxes([ShapeBox(0, None, box(1, 1, 5, 5))], labels_max=0).ids == [1]


def test_moved_box_and_unusable_shapes():
    state = AnnotatorState()
    state.sync_boxes([ShapeBox(0, None, box(1, 1, 5, 5))], labels_max=0)
    sync = state.sync_boxes([ShapeBox(1, None, box(2, 1, 6, 5)), ShapeBox(0, None, None)], 1)
    assert sync.moved == [(1, None)] and sync.ids == [1, 0] and not sync.added
    assert state.objects[1].boxes[None].tolist() == [2, 1, 6, 5]


def test_pasted_duplicate_on_the_same_slice_is_a_new_object_on_another_slice_a_key_slice():
    state = AnnotatorState()
    state.sync_boxes([ShapeBox(0, 4, box(1, 1, 5, 5))], labels_max=0)
    # Pasted onto the same slice: a new object.
    sync = state.sync_boxes([ShapeBox(1, 4, box(1, 1, 5, 5)), ShapeBox(1, 4, box(1, 1, 5, 5))], 1)
    assert sync.ids == [1, 2]
    state.sync_boxes([ShapeBox(1, 4, box(1, 1, 5, 5))], 2)
    # Pasted onto another slice (the id travels with the copied shape): a key slice of object 1.
    sync = state.sync_boxes([ShapeBox(1, 4, box(1, 1, 5, 5)), ShapeBox(1, 9, box(2, 2, 6, 6))], 2)
    assert sync.ids == [1, 1] and sync.added == [(1, 9)]
    assert sorted(state.objects[1].key_boxes()) == [4, 9]


def test_key_slice_mode_extends_the_active_object_once_per_slice():
    state = AnnotatorState()
    state.sync_boxes([ShapeBox(0, 4, box(1, 1, 5, 5))], labels_max=0)
    shapes = [ShapeBox(1, 4, box(1, 1, 5, 5)), ShapeBox(0, 10, box(1, 1, 6, 6))]
    sync = state.sync_boxes(shapes, 1, extend_object=1)
    assert sync.ids == [1, 1]
    # A second new box on slice 10 cannot be another key box of object 1 there: new object.
    shapes = [
        ShapeBox(1, 4, box(1, 1, 5, 5)),
        ShapeBox(1, 10, box(1, 1, 6, 6)),
        ShapeBox(0, 10, box(3, 3, 4, 4)),
    ]
    sync = state.sync_boxes(shapes, 1, extend_object=1)
    assert sync.ids == [1, 1, 2]
    # Deleting one key box keeps the object; deleting the last one deletes it.
    sync = state.sync_boxes([ShapeBox(1, 10, box(1, 1, 6, 6)), ShapeBox(2, 10, box(3, 3, 4, 4))], 2)
    assert sync.removed == [(1, 4)] and sync.deleted_objects == []
    sync = state.sync_boxes([ShapeBox(2, 10, box(3, 3, 4, 4))], 2)
    assert sync.deleted_objects == [1]


def test_clicks_go_to_the_smallest_box_holding_them_and_batch_with_padding():
    state = AnnotatorState()
    state.sync_boxes(
        [ShapeBox(0, None, box(0, 0, 50, 50)), ShapeBox(0, None, box(10, 10, 20, 20))], labels_max=0
    )
    clicks = [
        ClickPoint(None, 15.0, 15.0, True),
        ClickPoint(None, 40.0, 40.0, False),
        ClickPoint(None, 99.0, 99.0, True),
    ]
    changed = state.sync_points(clicks)
    assert sorted(changed) == [(1, None), (2, None)]
    assert state.sync_points(clicks) == []  # nothing new
    ids, boxes, points, labels = state.decode_request(None, [1, 2])
    assert ids == [1, 2] and boxes.shape == (2, 4)
    assert points.shape == (2, 1, 2)
    assert labels.tolist() == [[0], [1]]  # object 1 got the negative click, object 2 the positive
    assert points[1, 0].tolist() == [15.0, 15.0]
    # Removing the clicks re-decodes both objects without points.
    assert sorted(state.sync_points([])) == [(1, None), (2, None)]
    assert state.decode_request(None, [1, 2])[2] is None


def test_decode_request_pads_uneven_click_counts_with_no_point_labels():
    state = AnnotatorState()
    state.sync_boxes([ShapeBox(0, 3, box(0, 0, 9, 9)), ShapeBox(0, 3, box(20, 20, 29, 29))], 0)
    state.sync_points(
        [
            ClickPoint(3, 1.0, 1.0, True),
            ClickPoint(3, 2.0, 2.0, False),
            ClickPoint(3, 25.0, 25.0, True),
        ]
    )
    _, _, points, labels = state.decode_request(3, [1, 2])
    assert points.shape == (2, 2, 2)
    assert labels.tolist() == [[1, 0], [1, -1]]
    assert state.decode_request(5, [1, 2])[0] == []  # no boxes on slice 5


def test_a_shape_that_is_no_box_adds_no_object_and_says_why():
    state = AnnotatorState()
    refused = ShapeBox(0, None, None, "the box covers 1x1 pixels, less than 3 on a side")
    sync = state.sync_boxes([refused, ShapeBox(0, None, box(1, 1, 5, 5))], labels_max=0)
    assert sync.ids == [0, 1] and sync.added == [(1, None)]
    assert sync.refused == [refused.problem]
    assert list(state.objects) == [1]
