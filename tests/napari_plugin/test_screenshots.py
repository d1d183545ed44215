"""Real screenshots for the user guide, made by driving the plugin as a user would.

Each test segments a bundled sample with the real weights, renders the whole napari window and
saves it (under ``docs/images/`` with ``UPDATE_DOC_SCREENSHOTS=1``, see
``screenshot_paths``). They also check what the picture is supposed to show, so a
broken plugin cannot produce a good-looking screenshot.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_helpers import dice, draw_rectangle, gt_box, wait_idle
from napari_swinlitemedsam._napari.widget import BoxAnnotatorWidget
from napari_swinlitemedsam.io.samples import load_sample
from screenshot_paths import screenshot_path

# Shown windows and real encodes of many boxes and slices, to regenerate the docs images.
pytestmark = pytest.mark.slow

WINDOW = (1400, 860)
NUCLEI_2D = (175, 149, 88, 71, 166, 106, 121, 49)  # large nuclei in rows 195-462, columns 149-483


@pytest.fixture
def shown_viewer(make_napari_viewer):
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(*WINDOW)
    return viewer


def annotate(viewer):
    widget = BoxAnnotatorWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Box annotator")
    return widget, widget.annotator


def save(viewer, qtbot, name: str, tmp_path: Path) -> Path:
    qtbot.wait(300)  # let the canvas and the dock settle
    path = screenshot_path(name, tmp_path)
    picture = viewer.screenshot(str(path), canvas_only=False)
    assert picture.shape[0] > 400 and picture.shape[1] > 800
    return path


def test_screenshot_first_boxes(shown_viewer, qtbot, tmp_path):
    viewer = shown_viewer
    sample = load_sample("nuclei2d")
    viewer.add_image(sample.image, name="nuclei2d")
    _, annotator = annotate(viewer)
    for label in NUCLEI_2D:
        draw_rectangle(annotator.boxes, gt_box(sample.labels == label))
    wait_idle(qtbot, annotator)
    masks = annotator.labels.data
    for object_id, label in enumerate(NUCLEI_2D, start=1):
        assert dice(masks == object_id, sample.labels == label) > 0.8
    annotator.boxes.selected_data = set()
    viewer.camera.center = (330, 318)
    viewer.camera.zoom = 1.9
    save(viewer, qtbot, "nuclei2d_segmented.png", tmp_path)


def test_screenshot_hand_correction(shown_viewer, qtbot, tmp_path):
    viewer = shown_viewer
    sample = load_sample("nuclei2d")
    viewer.add_image(sample.image, name="nuclei2d")
    _, annotator = annotate(viewer)
    label = NUCLEI_2D[0]
    draw_rectangle(annotator.boxes, gt_box(sample.labels == label))
    wait_idle(qtbot, annotator)
    labels = annotator.labels
    before = labels.data.copy()
    # The annotator switches to the masks layer and paints a stroke that extends object 1.
    viewer.layers.selection.active = labels
    labels.mode = "paint"
    labels.selected_label = 1
    labels.brush_size = 6
    rows, cols = np.nonzero(before == 1)
    top = (rows.min(), int(cols.mean()))
    for step in range(8):
        labels.paint((top[0] - step, top[1] + step // 2), 1)
    assert (labels.data == 1).sum() > (before == 1).sum()
    viewer.camera.center = tuple(np.mean(np.nonzero(before == 1), axis=1))
    viewer.camera.zoom = 8
    save(viewer, qtbot, "hand_correction.png", tmp_path)
    labels.undo()
    labels.undo()
    assert (labels.data == 1).sum() < (before == 1).sum() + 200


def test_screenshot_3d_propagation(shown_viewer, qtbot, tmp_path, shared_embedding_cache):
    viewer = shown_viewer
    sample = load_sample("nuclei3d")
    first, last, key = 27, 43, 8
    image = sample.image[first : last + 1]
    reference = sample.labels[first : last + 1]
    viewer.add_image(image, name="nuclei3d", scale=sample.spacing)
    _, annotator = annotate(viewer)
    annotator.set_disk_cache(shared_embedding_cache)  # the stack of test_widget_3d.py
    viewer.dims.set_current_step(0, key)
    nuclei = (7, 11, 8)
    for label in nuclei:
        draw_rectangle(annotator.boxes, gt_box(reference[key] == label), slice_index=key)
    wait_idle(qtbot, annotator)
    for object_id in range(1, len(nuclei) + 1):
        annotator.propagate(object_id)
        wait_idle(qtbot, annotator)
    masks = annotator.labels.data
    for object_id, label in enumerate(nuclei, start=1):
        assert (masks == object_id).any(axis=(1, 2)).sum() > 5
        assert dice(masks == object_id, reference == label) > 0.7
    # A slice without boxes: its masks come from the propagation.
    viewer.dims.set_current_step(0, key + 4)
    viewer.camera.center = (0, 120 * sample.spacing[1], 100 * sample.spacing[2])
    viewer.camera.zoom = 9  # screen pixels per micrometre
    save(viewer, qtbot, "propagation_3d.png", tmp_path)

    viewer.layers["nuclei3d"].visible = False
    annotator.boxes.visible = False
    viewer.dims.ndisplay = 3
    viewer.camera.angles = (-15, 35, 80)
    viewer.camera.zoom = 14
    save(viewer, qtbot, "propagation_3d_rendered.png", tmp_path)
