"""A series writes instance map, semantic map and object table per item, and reads classes back."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_swinlitemedsam.annotation.class_list import ClassList, ClassListError
from napari_swinlitemedsam.annotation.object_classes import ObjectClasses, Provenance
from napari_swinlitemedsam.annotation.series import ImageSeries
from napari_swinlitemedsam.io.label_files import load_labels
from napari_swinlitemedsam.io.object_exports import load_object_table


@pytest.fixture
def stack_series(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(1)
    tifffile.imwrite(images / "s1.tif", rng.integers(0, 900, (5, 12, 14), dtype=np.uint16))
    tifffile.imwrite(images / "s2.tif", rng.integers(0, 900, (5, 12, 14), dtype=np.uint16))
    return ImageSeries.open(images, tmp_path / "out")


def labelled() -> tuple[np.ndarray, ObjectClasses, ClassList]:
    labels = np.zeros((5, 12, 14), dtype=np.uint16)
    labels[0:2, 1:5, 1:5] = 1
    labels[2, 6:9, 6:12] = 2
    labels[3, 0:2, 0:2] = 5  # painted, no class
    classes = ClassList()
    classes.add("nucleus")
    classes.add("mitotic")
    objects = ObjectClasses()
    objects.assign(1, 1)
    objects.assign(2, 2)
    objects.note([1, 2], Provenance.MODEL)
    objects.note([5], Provenance.PAINTED)
    return labels, objects, classes


def test_three_files_per_item_and_classes_come_back(stack_series):
    labels, objects, classes = labelled()
    classes.save(stack_series.class_list_path)
    assert stack_series.save(0, labels, objects=objects, class_list=classes, unit="µm")
    out = stack_series.outdir
    assert sorted(p.name for p in out.glob("s1*")) == [
        "s1.tif",
        "s1_objects.csv",
        "s1_semantic.tif",
    ]
    semantic = load_labels(out / "s1_semantic.tif", "tiff")
    expected = np.zeros_like(labels)
    expected[labels == 1], expected[labels == 2] = 1, 2  # object 5 has no class: background
    np.testing.assert_array_equal(semantic, expected)
    rows = load_object_table(out / "s1_objects.csv")
    assert [(r["object_id"], r["class_id"], r["class_name"], r["provenance"]) for r in rows] == [
        (1, 1, "nucleus", "model"),
        (2, 2, "mitotic", "model"),
        (5, 0, "", "painted"),
    ]
    assert rows[0]["voxel_count"] == 32 and rows[0]["first_slice"] == "0"

    reopened = ImageSeries.open(stack_series.items, out)
    team = reopened.load_class_list()
    assert team == classes
    saved = reopened.saved_labels(0)
    restored, messages = reopened.saved_classes(0, saved, team)
    assert messages == []
    assert restored.classes == objects.classes
    assert restored.provenance == objects.provenance


def test_a_class_change_alone_rewrites_the_exports(stack_series):
    labels, objects, classes = labelled()
    assert stack_series.save(0, labels, objects=objects, class_list=classes)
    assert not stack_series.save(0, labels, objects=objects, class_list=classes)
    objects.assign(2, 1)
    assert stack_series.save(0, labels, objects=objects, class_list=classes)
    semantic = load_labels(stack_series.outdir / "s1_semantic.tif", "tiff")
    assert set(np.unique(semantic[labels == 2]).tolist()) == {1}


def test_missing_rows_and_unknown_classes_are_reported_not_lost(stack_series):
    labels, objects, classes = labelled()
    stack_series.save(0, labels, objects=objects, class_list=classes)
    table = stack_series.outdir / "s1_objects.csv"
    lines = table.read_text().splitlines()
    table.write_text("\n".join(line for line in lines if not line.startswith("2,")) + "\n")
    only_first = ClassList()
    only_first.add("nucleus")
    restored, messages = stack_series.saved_classes(0, labels, only_first)
    assert restored.classes == {1: 1}
    assert any("[2] are in the label map but not in s1_objects.csv" in m for m in messages)
    no_table = stack_series.saved_classes(1, labels, classes)
    assert no_table[0].classes == {} and "s2_objects.csv is missing" in no_table[1][0]


def test_a_broken_class_file_is_reported(stack_series):
    stack_series.class_list_path.write_text(
        '{"classes": [{"id": 1, "name": "a"}, {"id": 1, "name": "b"}]}'
    )
    with pytest.raises(ClassListError, match="class id 1 is used by both"):
        stack_series.load_class_list()
