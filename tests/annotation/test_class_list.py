"""Class list: add/rename/recolour/remove, JSON round trip, and clear errors for bad files."""

from __future__ import annotations

import json

import pytest

from napari_swinlitemedsam.annotation.class_list import (
    PALETTE,
    ClassList,
    ClassListError,
    ObjectClass,
    normalise_colour,
)


def test_add_rename_recolour_remove():
    classes = ClassList()
    liver = classes.add("liver")
    tumour = classes.add("tumour", "#F00")
    assert (liver.class_id, liver.colour) == (1, PALETTE[0])
    assert (tumour.class_id, tumour.colour) == (2, "#ff0000")
    classes.rename(1, " Liver ")
    classes.recolour(2, "00ff00")
    assert classes.get(1).name == "Liver"
    assert classes.get(2).colour == "#00ff00"
    assert classes.find("LIVER").class_id == 1
    classes.remove(1)
    assert classes.ids() == [2]
    assert classes.add("vessel").class_id == 3  # ids above the highest, never reused below it


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (lambda c: c.add("LIVER"), "two classes are called"),
        (lambda c: c.add("bone", class_id=1), "class id 1 is used by both 'liver' and 'bone'"),
        (lambda c: c.add("   "), "needs a name"),
        (lambda c: c.add("bone", "red"), "write it as #rrggbb"),
        (lambda c: c.add("bone", class_id=0), "0 is the background"),
        (lambda c: c.rename(2, "liver"), "already a class called 'liver'"),
        (lambda c: c.get(9), "no class with id 9"),
    ],
)
def test_invalid_changes_are_refused_and_the_list_is_kept(action, message):
    classes = ClassList([ObjectClass(1, "liver", "#111111"), ObjectClass(2, "tumour", "#222222")])
    before = list(classes)
    with pytest.raises(ClassListError, match=message):
        action(classes)
    assert list(classes) == before


def test_json_file_round_trip(tmp_path):
    classes = ClassList()
    classes.add("nucleus")
    classes.add("mitotic nucleus", "#d62728", class_id=7)
    path = classes.save(tmp_path / "team.json")
    again = ClassList.load(path)
    assert again == classes
    assert [c.class_id for c in again] == [1, 7]
    assert json.loads(path.read_text())["version"] == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"classes": [{"id": 1, "name": "a"}, {"id": 1, "name": "b"}]}', "class 2: class id 1"),
        ('{"classes": [{"id": 1, "name": "a"}, {"id": 2, "name": "A"}]}', "class 2: two classes"),
        ('{"classes": [{"name": "a"}]}', "needs an 'id' and a 'name'"),
        ('{"classes": [{"id": "one", "name": "a"}]}', "not a whole number"),
        ('{"version": 9, "classes": []}', "version 9 is not supported"),
        ("[1, 2]", "expected"),
        ("{not json", "not a readable JSON class file"),
    ],
)
def test_bad_class_files_name_the_file_and_the_problem(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ClassListError, match=message) as caught:
        ClassList.load(path)
    assert "bad.json" in str(caught.value)


def test_missing_class_file(tmp_path):
    with pytest.raises(ClassListError, match="no such class file"):
        ClassList.load(tmp_path / "absent.json")


def test_colour_forms():
    assert normalise_colour("#ABC") == "#aabbcc"
    assert normalise_colour(" 1F77B4") == "#1f77b4"
