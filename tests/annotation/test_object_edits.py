"""Delete / merge / split: only the named objects' voxels change (checked by hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from napari_swinlitemedsam.annotation.object_edits import (
    ObjectEditError,
    component_count,
    delete_object,
    merge_objects,
    split_component,
)


def two_piece_stack() -> np.ndarray:
    labels = np.zeros((4, 10, 12), dtype=np.uint16)
    labels[1:3, 1:4, 1:4] = 5  # piece A of object 5 (18 voxels)
    labels[1, 6:9, 6:11] = 5  # piece B of object 5 (15 voxels)
    labels[0:4, 5, 0:5] = 9  # another object touching nothing of 5
    return labels


def test_delete_merge_split_on_a_stack():
    labels = two_piece_stack()
    edit = delete_object(labels, 9)
    assert edit.size == 20 and not edit.values.any()
    merged = labels.copy()
    merge_objects(merged, 5, 9).apply_to(merged)
    assert set(np.unique(merged)) == {0, 5}
    assert np.count_nonzero(merged == 5) == 33 + 20

    split = labels.copy()
    split_component(split, 5, 10).apply_to(split)  # no point: the second-largest piece
    assert np.count_nonzero(split == 10) == 15 and np.count_nonzero(split == 5) == 18
    chosen = labels.copy()
    split_component(chosen, 5, 10, at=(1, 2, 2)).apply_to(chosen)
    assert np.count_nonzero(chosen == 10) == 18
    assert component_count(labels, 5) == 2 and component_count(split, 10) == 1


def test_edits_do_not_write_the_input():
    labels = two_piece_stack()
    before = labels.copy()
    delete_object(labels, 5)
    merge_objects(labels, 9, 5)
    split_component(labels, 5, 11)
    np.testing.assert_array_equal(labels, before)


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (lambda a: delete_object(a, 3), "object 3 has no pixels"),
        (lambda a: merge_objects(a, 5, 5), "two different objects"),
        (lambda a: merge_objects(a, 5, 4), "object 4 has no pixels"),
        (lambda a: split_component(a, 9, 20), "single piece"),
        (lambda a: split_component(a, 5, 9), "new id 9 is not free"),
        (lambda a: split_component(a, 5, 20, at=(0, 0, 0)), "not on object 5"),
        (lambda a: split_component(a, 5, 20, at=(1, 2)), "needs 3 coordinates"),
        (lambda a: split_component(a.astype(np.uint8), 5, 300), "does not fit"),
        (lambda a: delete_object(a, 0), "not an object id"),
    ],
)
def test_impossible_edits_explain_themselves(action, message):
    with pytest.raises(ObjectEditError, match=message):
        action(two_piece_stack())


label_maps = arrays(
    np.uint8,
    st.tuples(st.integers(1, 3), st.integers(1, 7), st.integers(1, 7)),
    elements=st.integers(0, 4),
)


@settings(max_examples=120, deadline=None)
@given(
    labels=label_maps,
    first=st.integers(1, 4),
    second=st.integers(1, 4),
    op=st.sampled_from(["delete", "merge", "split"]),
)
def test_other_objects_are_never_touched(labels, first, second, op):
    """Whatever the map, an edit changes only voxels of the objects it names, and to the
    values it promises."""
    try:
        if op == "delete":
            edit, named = delete_object(labels, first), {first}
        elif op == "merge":
            edit, named = merge_objects(labels, first, second), {second}
        else:
            edit, named = split_component(labels, first, 7), {first}
    except ObjectEditError:
        return  # absent object, same ids, single piece: refused, nothing to check
    after = labels.copy()
    edit.apply_to(after)
    changed = after != labels
    assert set(np.unique(labels[changed]).tolist()) <= named
    untouched = ~np.isin(labels, list(named))
    np.testing.assert_array_equal(after[untouched], labels[untouched])
    if op == "delete":
        assert not np.any(after == first)
    elif op == "merge":
        assert not np.any(after == second)
        assert np.count_nonzero(after == first) == np.count_nonzero(
            np.isin(labels, [first, second])
        )
    else:
        assert 0 < np.count_nonzero(after == 7) < np.count_nonzero(labels == first)


def test_delete_and_merge_on_masks_on_disk_equal_the_edits_in_memory(tmp_path):
    zarr = pytest.importorskip("zarr")
    labels = two_piece_stack()
    store = zarr.open_array(
        str(tmp_path / "m.zarr"), mode="w", shape=labels.shape, chunks=(1, 10, 12), dtype="u2"
    )
    store[:] = labels
    for edit_of in (lambda data: delete_object(data, 9), lambda data: merge_objects(data, 9, 5)):
        on_disk, in_memory = edit_of(store), edit_of(labels)
        order = np.lexsort(on_disk.indices[::-1])  # same voxels, maybe in another order
        memory_order = np.lexsort(in_memory.indices[::-1])
        for axis in range(3):
            np.testing.assert_array_equal(
                on_disk.indices[axis][order], in_memory.indices[axis][memory_order]
            )
        np.testing.assert_array_equal(on_disk.values, in_memory.values)
    with pytest.raises(ObjectEditError, match="no pixels"):
        delete_object(store, 4)
