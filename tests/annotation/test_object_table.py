"""Object table (counts, slices, physical volumes) and the object -> class bookkeeping."""

from __future__ import annotations

import numpy as np
import pytest

from napari_swinlitemedsam.annotation.class_list import ClassList
from napari_swinlitemedsam.annotation.object_classes import (
    ObjectClasses,
    Provenance,
    classes_from_table,
)
from napari_swinlitemedsam.annotation.object_table import (
    ids_present,
    ids_without_rows,
    object_table,
    volume_unit,
)


@pytest.fixture
def classes() -> ClassList:
    team = ClassList()
    team.add("liver")
    team.add("tumour")
    return team


def test_anisotropic_stack_volume_is_count_times_voxel_volume(classes):
    labels = np.zeros((6, 20, 30), dtype=np.uint16)
    labels[1:5, 2:8, 3:9] = 3  # 4 x 6 x 6 = 144 voxels on slices 1..4
    labels[2, 10:12, 10:15] = 8  # 10 voxels on slice 2
    objects = ObjectClasses()
    objects.assign(3, 1)
    objects.note([3], Provenance.MODEL)
    objects.note([3], Provenance.PAINTED)
    objects.note([8], Provenance.PAINTED)
    spacing = (2.5, 0.7, 0.9)  # (z, y, x) mm, as a napari layer's scale
    rows = object_table(labels, objects, classes, spacing, "mm")
    assert [r.object_id for r in rows] == [3, 8]
    liver, painted = rows
    assert (liver.class_id, liver.class_name, liver.provenance) == (1, "liver", "both")
    assert (liver.first_slice, liver.last_slice, liver.middle_slice) == (1, 4, 2)
    assert liver.voxel_count == 144
    assert liver.volume == pytest.approx(144 * 2.5 * 0.7 * 0.9, rel=1e-12)
    assert liver.unit == "mm³"
    assert liver.bounds == ((1, 5), (2, 8), (3, 9))
    assert (painted.class_id, painted.class_name, painted.provenance) == (0, "", "painted")
    assert painted.volume == pytest.approx(10 * 2.5 * 0.7 * 0.9, rel=1e-12)
    record = liver.as_record()
    assert record["volume_unit"] == "mm³" and record["first_slice"] == 1


def test_2d_map_without_spacing_counts_pixels():
    labels = np.zeros((8, 9), dtype=np.int32)
    labels[1:3, 1:4] = 2
    (row,) = object_table(labels)
    assert (row.first_slice, row.middle_slice, row.voxel_count, row.volume) == (None, None, 6, 6)
    assert row.unit == "pixel"
    assert object_table(np.zeros((3, 3), np.uint8)) == []


def test_huge_sparse_ids_are_counted():
    labels = np.zeros((5, 6), dtype=np.uint32)
    labels[0, 0:2] = 4_000_000_000
    labels[4, 5] = 7
    rows = object_table(labels)
    assert [(r.object_id, r.voxel_count) for r in rows] == [(7, 1), (4_000_000_000, 2)]
    full = np.full((2, 2), 3_000_000, dtype=np.uint32)  # no background at all
    assert [(r.object_id, r.voxel_count) for r in object_table(full)] == [(3_000_000, 4)]


def test_units():
    assert volume_unit("µm", 3) == "µm³" and volume_unit("mm", 2) == "mm²"
    assert volume_unit(None, 3, scaled=False) == "voxel"
    assert volume_unit(None, 3) == "unit³"  # spacing without a named unit
    with pytest.raises(ValueError, match="positive"):
        object_table(np.ones((2, 2, 2), np.uint8), spacing=(1, 0, 1))


def test_bookkeeping_merge_split_unclassify():
    objects = ObjectClasses()
    objects.assign(1, 2)
    objects.note([1], Provenance.MODEL)
    objects.note([4], Provenance.PAINTED)
    objects.merge(4, 1)  # 4 had no class: takes 1's; provenance both
    assert objects.class_of(4) == 2 and objects.provenance_of(4) == Provenance.BOTH
    assert objects.class_of(1) == 2  # kept: undoing the pixel merge brings object 1 back
    objects.forget(1)
    assert objects.class_of(1) == 0 and objects.provenance_of(1) is None
    objects.split(4, 9)
    assert objects.class_of(9) == 2
    objects.assign_new(9, 1)  # already classified: kept
    assert objects.class_of(9) == 2
    assert objects.unclassify(2) == [4, 9]
    assert objects.classes == {}


def test_table_rows_restore_classes_and_report_unknown_ones():
    rows = [
        {"object_id": 1, "class_id": 1, "provenance": "model"},
        {"object_id": 2, "class_id": 5},
        {"object_id": 3, "class_id": 0},
    ]
    objects, messages = classes_from_table(rows, [1, 2])
    assert objects.classes == {1: 1}
    assert objects.provenance_of(1) == Provenance.MODEL
    assert len(messages) == 1 and "class id 5" in messages[0] and "[2]" in messages[0]
    labels = np.array([[0, 1, 2], [3, 6, 6]])
    assert ids_without_rows(labels, [1, 2, 3]) == [6]


@pytest.mark.parametrize("kind", ["blobs", "interleaved"])
def test_counts_and_bounds_agree_with_numpy(kind):
    """Counting inside boxes (blobs) and the chunked bincount (interleaved ids whose boxes all
    cover the whole map) both give np.unique's counts and the ids' true bounding boxes."""
    rng = np.random.default_rng(3)
    if kind == "blobs":
        labels = np.zeros((6, 40, 40), dtype=np.uint16)
        for object_id in range(1, 9):
            z, y, x = rng.integers(0, 5), rng.integers(0, 34), rng.integers(0, 34)
            labels[z : z + 2, y : y + 6, x : x + 6] = object_id
    else:
        labels = rng.integers(0, 12, (6, 40, 40)).astype(np.uint16)
    ids, counts = np.unique(labels[labels > 0], return_counts=True)
    rows = object_table(labels)
    assert [(r.object_id, r.voxel_count) for r in rows] == list(zip(ids.tolist(), counts.tolist()))
    for row in rows:
        where = np.nonzero(labels == row.object_id)
        assert row.bounds == tuple((int(a.min()), int(a.max()) + 1) for a in where)


def test_masks_on_disk_give_the_same_table_read_one_slice_at_a_time(tmp_path):
    zarr = pytest.importorskip("zarr")
    rng = np.random.default_rng(5)
    labels = np.zeros((7, 30, 40), dtype=np.uint16)
    for object_id in (2, 5, 9):
        z, y, x = rng.integers(0, 4), rng.integers(0, 22), rng.integers(0, 30)
        labels[z : z + 3, y : y + 7, x : x + 9] = object_id
    labels[6, 0, 0] = 5  # an object in two pieces far apart
    store = zarr.open_array(
        str(tmp_path / "m.zarr"), mode="w", shape=labels.shape, chunks=(1, 30, 40), dtype="u2"
    )
    store[:] = labels
    spacing = (2.0, 0.5, 0.5)
    assert object_table(store, spacing=spacing, unit="mm") == object_table(
        labels, spacing=spacing, unit="mm"
    )
    assert ids_present(store) == ids_present(labels) == {2, 5, 9}
