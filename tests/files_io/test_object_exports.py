"""Semantic maps and object table CSVs: lookups, round trips, clear errors for bad tables."""

from __future__ import annotations

import numpy as np
import pytest

from napari_swinlitemedsam.io.object_exports import (
    ObjectTableError,
    load_object_table,
    save_object_table,
    semantic_labels,
    semantic_path,
    table_path,
)


def test_semantic_map_takes_each_objects_class():
    instances = np.array([[0, 1, 1], [2, 3, 0]], dtype=np.uint16)
    semantic = semantic_labels(instances, {1: 4, 2: 4, 9: 2})  # 3 unclassified, 9 absent
    np.testing.assert_array_equal(semantic, [[0, 4, 4], [4, 0, 0]])
    assert semantic.dtype == np.uint8
    sparse = np.array([[0, 4_000_000_000]], dtype=np.uint32)
    np.testing.assert_array_equal(semantic_labels(sparse, {4_000_000_000: 300}), [[0, 300]])
    assert semantic_labels(sparse, {4_000_000_000: 300}).dtype == np.uint16


def test_paths():
    assert semantic_path("out/ct_01", ".nii.gz").name == "ct_01_semantic.nii.gz"
    assert table_path("out/ct_01").name == "ct_01_objects.csv"


def test_table_round_trip(tmp_path):
    rows = [
        {"object_id": 1, "class_id": 2, "class_name": "tumour, left", "voxel_count": 5},
        {"object_id": 7, "class_id": 0, "class_name": "", "voxel_count": 1, "volume": "0.5"},
    ]
    path = save_object_table(tmp_path / "a_objects.csv", rows)
    back = load_object_table(path)
    assert [(r["object_id"], r["class_id"], r["class_name"]) for r in back] == [
        (1, 2, "tumour, left"),
        (7, 0, ""),
    ]
    assert back[1]["volume"] == "0.5" and back[0]["voxel_count"] == 5
    assert path.read_text().splitlines()[0].startswith("object_id,class_id,class_name")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("object_id,class_name\n1,a\n", "no 'class_id' column"),
        ("object_id,class_id\n1,2\n1,3\n", "line 3: object 1 is listed twice"),
        ("object_id,class_id\nx,2\n", "line 2: object_id 'x' is not a whole number"),
    ],
)
def test_bad_tables_say_which_line(tmp_path, text, message):
    path = tmp_path / "t.csv"
    path.write_text(text)
    with pytest.raises(ObjectTableError, match=message):
        load_object_table(path)
