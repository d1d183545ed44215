"""Classes and objects in a real napari viewer with the real bundled LiteMedSAM weights, on a
crop of the real bundled 3D nuclei sample (anisotropic voxels, 0.29 x 0.26 x 0.26 µm) written
as a NIfTI series item: two classes, a box in each, change a class, merge, delete, undo, save,
move away and back, close and reopen the series, and a screenshot for the user guide.
"""

from __future__ import annotations

import numpy as np
import pytest
from napari.utils.key_bindings import coerce_keybinding

from napari_helpers import (
    MODEL_TIMEOUT_MS,
    dice,
    draw_rectangle,
    gt_box,
    no_worker_threads,
    wait_idle,
)
from napari_swinlitemedsam._napari.widget import BoxAnnotatorWidget
from napari_swinlitemedsam.annotation.class_list import ClassList
from napari_swinlitemedsam.io.image_files import read_image
from napari_swinlitemedsam.io.label_files import load_labels
from napari_swinlitemedsam.io.object_exports import load_object_table
from napari_swinlitemedsam.io.samples import load_sample
from screenshot_paths import screenshot_path

nibabel = pytest.importorskip("nibabel")

SPACING = (0.29, 0.26, 0.26)  # (z, y, x) µm of the sample
CROP = (slice(28, 42), slice(20, 104), slice(80, 210))  # holds nuclei 8 and 13 whole in-plane
FIRST, SECOND = 8, 13
SLICE = 7  # local slice of the crop where both boxes are drawn
MIN_DSC = 0.7  # a crop of a 3D nucleus on one slice; the stub-free model must find it clearly


def write_item(path, image) -> None:
    affine = np.diag([SPACING[2], SPACING[1], SPACING[0], 1.0])
    nifti = nibabel.Nifti1Image(np.ascontiguousarray(image.T), affine)
    nifti.header.set_xyzt_units("micron")
    nibabel.save(nifti, str(path))


@pytest.fixture
def series_folder(tmp_path):
    sample = load_sample("nuclei3d")
    folder = tmp_path / "stacks"
    folder.mkdir()
    write_item(folder / "a.nii.gz", sample.image[CROP])
    write_item(folder / "b.nii.gz", sample.image[CROP][:, ::-1].copy())
    return folder, sample.labels[CROP]


def draw_and_wait(qtbot, annotator, truth_plane) -> int:
    before = int(annotator.labels.data.max())
    draw_rectangle(annotator.boxes, gt_box(truth_plane), slice_index=SLICE)
    qtbot.waitUntil(lambda: int(annotator.labels.data.max()) > before, timeout=MODEL_TIMEOUT_MS)
    wait_idle(qtbot, annotator)
    object_id = int(annotator.labels.data.max())
    assert dice(annotator.labels.data[SLICE] == object_id, truth_plane) > MIN_DSC
    return object_id


def records(panel) -> list[dict]:
    panel.refresh()
    return [row.as_record() for row in panel.rows]


@pytest.mark.slow
def test_classes_objects_actions_undo_save_and_reopen(
    make_napari_viewer, qtbot, series_folder, tmp_path
):
    folder, truth = series_folder
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1400, 900)
    widget = BoxAnnotatorWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Box annotator")
    outdir = tmp_path / "out"
    assert widget.series_panel.open_series([folder], outdir, "nifti")
    annotator, classes, table = widget.annotator, widget.class_panel, widget.object_panel
    widget.classes_section.set_expanded(True)
    nucleus = classes.add_class("nucleus")
    mitotic = classes.add_class("mitotic", "#d62728")
    assert ClassList.load(outdir / "classes.json") == classes.class_list  # saved with the series
    viewer.dims.set_current_step(0, SLICE)

    classes.set_active(nucleus)
    first = draw_and_wait(qtbot, annotator, truth[SLICE] == FIRST)
    viewer.layers.selection.active = annotator.boxes
    viewer.keymap[coerce_keybinding("Alt-2")](viewer)  # the second class
    assert classes.active_class == mitotic
    second = draw_and_wait(qtbot, annotator, truth[SLICE] == SECOND)
    # A hand-painted object the actions must never touch.
    masks = annotator.labels
    viewer.layers.selection.active = masks
    masks.mode = "paint"
    masks.selected_label = 40
    masks.brush_size = 7
    masks.paint((SLICE, 6, 6), 40)
    painted_before = masks.data == 40

    rows = records(table)
    assert [(r["object_id"], r["class_name"], r["provenance"]) for r in rows] == [
        (first, "nucleus", "model"),
        (second, "mitotic", "model"),
        (40, "", "painted"),
    ]
    # NIfTI stores voxel sizes as float32: the layer's scale is the sample's spacing to 1e-6.
    np.testing.assert_allclose(masks.scale, SPACING, rtol=1e-6)
    voxel_volume = float(np.prod(masks.scale))
    for row, table_row in zip(rows, table.rows):
        count = int(np.count_nonzero(masks.data == row["object_id"]))
        assert row["voxel_count"] == count and row["volume_unit"] == "µm³"
        assert table_row.volume == pytest.approx(count * voxel_volume, rel=1e-12)

    # The picture for the user guide: two classes, a painted object, the table.
    widget.series_panel.set_expanded(False)
    viewer.layers.selection.active = annotator.boxes
    annotator.boxes.selected_data = set()
    viewer.reset_view()
    qtbot.wait(300)
    path = screenshot_path("classes_objects.png", tmp_path)
    assert viewer.screenshot(str(path), canvas_only=False).shape[1] > 800

    # Clicking a row shows the object's middle slice and selects its box there.
    viewer.dims.set_current_step(0, 0)
    table.go_to_row(0)
    assert viewer.dims.current_step[0] == SLICE and masks.selected_label == first
    assert annotator.boxes.selected_data == {0}

    # Change class, merge (the larger object keeps its id), delete, undo.
    table.select_ids([first])
    classes.set_active(mitotic)
    assert table.set_class_of_selected()
    assert [r["class_name"] for r in records(table)][:2] == ["mitotic", "mitotic"]
    sizes = {r["object_id"]: r["voxel_count"] for r in records(table)}
    keep, absorbed = sorted((first, second), key=lambda oid: -sizes[oid])
    union = np.isin(masks.data, [first, second])
    table.select_ids([first, second])
    assert table.merge_selected()
    assert np.array_equal(masks.data == keep, union) and not np.any(masks.data == absorbed)
    assert np.array_equal(masks.data == 40, painted_before)
    table.select_ids([keep])
    assert table.delete_selected()
    assert not np.any(masks.data == keep) and np.array_equal(masks.data == 40, painted_before)
    masks.undo()  # the deletion comes back, with its class
    assert np.array_equal(masks.data == keep, union)
    assert [(r["object_id"], r["class_name"]) for r in records(table)] == [
        (keep, "mitotic"),
        (40, ""),
    ]
    shown = records(table)
    labels_shown = masks.data.copy()

    # Save by moving to the next item and back: classes come back from the object table.
    assert widget.series_panel.go_to(1)
    assert records(table) == []
    assert widget.series_panel.go_to(0)
    assert records(table) == shown
    assert widget.series_panel.close_series()
    image = read_image(folder / "a.nii.gz")  # labels are read in the image's display order
    np.testing.assert_array_equal(load_labels(outdir / "a.nii.gz", "nifti", image), labels_shown)
    semantic = load_labels(outdir / "a_semantic.nii.gz", "nifti", image)
    np.testing.assert_array_equal(semantic, np.where(labels_shown == keep, mitotic, 0))
    saved_rows = load_object_table(outdir / "a_objects.csv")
    assert [(r["object_id"], r["class_id"]) for r in saved_rows] == [(keep, mitotic), (40, 0)]

    # Reopen: a fresh class list in the widget is replaced by the series' one.
    classes.replace_list(ClassList())
    assert widget.series_panel.open_series([folder], outdir, "nifti")
    assert classes.class_list == ClassList.load(outdir / "classes.json")
    assert [c.name for c in classes.class_list] == ["nucleus", "mitotic"]
    np.testing.assert_array_equal(widget.annotator.labels.data, labels_shown)
    assert records(table) == shown
    assert widget.close_annotator()
    qtbot.waitUntil(no_worker_threads, timeout=MODEL_TIMEOUT_MS)
