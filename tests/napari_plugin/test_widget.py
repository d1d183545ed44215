"""The Box annotator in a real napari viewer, with the real bundled LiteMedSAM weights, on the real
bundled 2D sample (fluorescent nuclei with reference labels).

Each test encodes the 512x512 image once (0.5-10 s on a shared 2-core CPU), so they are few and
each checks several things.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from napari_helpers import (
    MODEL_TIMEOUT_MS,
    StallMeter,
    dice,
    draw_rectangle,
    gt_box,
    no_worker_threads,
    wait_idle,
)
from napari_swinlitemedsam._napari.widget import SHORTCUTS, BoxAnnotatorWidget
from napari_swinlitemedsam.annotation.jobs import JobKind
from napari_swinlitemedsam.io.samples import load_sample

# Two large, well separated nuclei of the sample. Segmented headless from their reference boxes,
# LiteMedSAM scores DSC 0.951 (NUCLEUS) and 0.939 (OTHER_NUCLEUS); over all 125 nuclei the median
# is 0.85. The widget must reach the headless quality, so DSC > 0.85 is demanded: well below what
# these nuclei get, well above what a wrong frame (a box shifted or transposed by the glue) gives.
NUCLEUS = 175
OTHER_NUCLEUS = 106
MIN_DSC = 0.85


@pytest.fixture
def sample():
    return load_sample("nuclei2d")


def open_annotator(make_napari_viewer, sample, viewer=None):
    if viewer is None:
        viewer = make_napari_viewer()
        viewer.add_image(sample.image, name="nuclei2d")
    widget = BoxAnnotatorWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Box annotator")
    return viewer, widget, widget.annotator


@pytest.mark.slow
def test_drawn_box_gives_the_objects_mask_without_freezing_the_window(
    make_napari_viewer, qtbot, sample
):
    viewer = make_napari_viewer()
    viewer.add_image(sample.image, name="nuclei2d")
    started = time.perf_counter()  # the window shows the image; the plugin is opened now
    viewer, widget, annotator = open_annotator(make_napari_viewer, sample, viewer)
    assert annotator.boxes.mode == "add_rectangle"
    truth = sample.labels == NUCLEUS
    box = gt_box(truth)

    # Drawn at once, while the model loads and the image is encoded: the box is queued.
    draw_rectangle(annotator.boxes, box)
    assert annotator.runner.busy
    meter = StallMeter(where=lambda: annotator.runner.kind)
    meter.start()  # from here on the GUI thread only waits: the model works in the background
    qtbot.waitUntil(lambda: (annotator.labels.data > 0).any(), timeout=MODEL_TIMEOUT_MS)
    first_mask_s = time.perf_counter() - started
    longest_stall = meter.stop()
    wait_idle(qtbot, annotator)
    model_work_s = annotator.last_decode_seconds  # encode + decode of the first box

    labels = annotator.labels.data
    object_id = int(labels.max())
    assert object_id == 1 and set(np.unique(labels)) == {0, 1}
    assert dice(labels == object_id, truth) > MIN_DSC
    # The widget gives what the inference API gives for the same box (same embedding):
    # exactly, unless the runtime self-check ran in the background of this window ("measured")
    # and switched the decoder after this box (float32 runtimes agree to ~1e-6 of the logits).
    predictor = annotator.predictor
    predictor.set_encoded(predictor.encode(sample.image, key=(annotator.image_key, None)))
    api_mask = predictor.predict(box[None]).masks[0]
    differing = int(((labels == object_id) != api_mask).sum())
    assert differing == 0 if predictor.runtime_choice.how != "measured" else differing <= 2
    assert predictor.pending_self_check is None  # done while the window waited
    # The box's edge takes its label's colour, and painting continues that object.
    np.testing.assert_allclose(
        annotator.boxes.edge_color[0], annotator.labels.colormap.map(object_id)
    )
    assert annotator.labels.selected_label == object_id
    assert widget.status_label.text().startswith("Ready: 1 object")
    # The widget names what runs the encoder (chosen for this machine by from_pretrained).
    choice = predictor.runtime_choice
    assert widget.encoder_label.text() == predictor.describe_runtimes()
    assert widget.encoder_label.text().startswith(choice.describe())
    # where boxes are decoded is measured apart (on a busy machine torch can keep them even
    # when a graph runtime encodes): the widget says where, whatever was chosen
    assert predictor.decoder_runtime == choice.decoder
    decoded_on_graph = predictor.decoder_runtime != "torch"
    assert ("boxes decoded on" in widget.encoder_label.text()) == decoded_on_graph
    assert choice.label == f"{predictor.runtime} {predictor.precision}"

    # A - click inside the box re-runs the decoder for that object with the click added.
    before_click = labels == object_id
    widget.options.negative_button.setChecked(True)
    row, col = np.argwhere(before_click).mean(axis=0).round().astype(int)
    annotator.points.add([row, col])
    wait_idle(qtbot, annotator)
    clicked = predictor.predict(
        box[None], points=np.array([[[col, row]]]), point_labels=np.array([[0]])
    )
    after_click = annotator.labels.data == object_id
    assert not np.array_equal(after_click, before_click)
    assert np.array_equal(after_click, clicked.masks[0])

    # The event loop kept turning while the image was encoded and decoded: a frozen window would
    # show a gap as long as that work itself (the first decode job includes the encoding).
    # Loading the model (importing its modules, reading the weights) may hold Python's GIL for
    # longer stretches; that gap is reported, and bounded more loosely.
    on_slice = [gap for gap, before, after in meter.gaps() if before == after == JobKind.DECODE]
    print(
        f"\ntime to first mask {first_mask_s:.2f} s (open widget, load model, encode, decode); "
        f"encode + decode {model_work_s:.2f} s; longest event-loop stall while encoding "
        f"{max(on_slice) * 1000:.0f} ms, over the whole wait {longest_stall * 1000:.0f} ms "
        f"(during: {meter.gaps()[0][1]})"
    )
    assert max(on_slice) < min(0.5, model_work_s / 2)
    # A window frozen by the load would stall for most of the wait; a machine busy with other
    # work stretches every stretch of held GIL, so the bound grows with the wait it measures.
    assert longest_stall < max(1.0, first_mask_s / 4)


def test_undo_redo_hand_painting_delete_and_overwrite(make_napari_viewer, qtbot, sample):
    _, widget, annotator = open_annotator(make_napari_viewer, sample)
    wait_idle(qtbot, annotator)
    labels, boxes = annotator.labels, annotator.boxes
    truth = sample.labels == OTHER_NUCLEUS
    box = gt_box(truth)

    # The annotator paints part of the nucleus by hand as another object, id 40.
    x_min, y_min, x_max, y_max = box
    centre = ((y_min + y_max) // 2, (x_min + x_max) // 2)
    labels.brush_size = 9
    labels.paint(centre, 40)
    painted = labels.data == 40
    assert painted.sum() > 20

    draw_rectangle(boxes, box)
    wait_idle(qtbot, annotator)
    object_id = 41  # max + 1 of the labels layer: never reuses the hand-painted id
    mine = labels.data == object_id
    assert mine.any()
    assert np.array_equal(labels.data == 40, painted), "the hand-painted object must survive"
    assert dice(mine | painted, truth) > MIN_DSC

    # Undo takes the model output away in one step, redo brings it back; the painting stays.
    labels.undo()
    assert not (labels.data == object_id).any() and np.array_equal(labels.data == 40, painted)
    labels.redo()
    assert np.array_equal(labels.data == object_id, mine)

    # With "overwrite" on, moving the box re-segments the object and may take painted pixels.
    widget.options.overwrite_box.setChecked(True)
    boxes.selected_data = {0}
    boxes.mode = "select"
    moved = boxes.data[0].copy()
    moved[:, 0] -= 1.0  # one pixel up
    _move_shape(boxes, 0, moved)
    wait_idle(qtbot, annotator)
    assert annotator.state.objects[object_id].boxes[None].tolist() == [
        x_min,
        y_min - 1,
        x_max,
        y_max - 1,
    ]
    retaken = labels.data == object_id
    assert (retaken & painted).sum() > 0.9 * painted.sum()
    assert dice(retaken, truth) > MIN_DSC

    # Deleting the box removes its mask, undoably.
    before_delete = labels.data.copy()
    boxes.selected_data = {0}
    boxes.remove_selected()
    assert not (labels.data == object_id).any()
    assert object_id not in annotator.state.objects
    labels.undo()
    assert np.array_equal(labels.data, before_delete)
    wait_idle(qtbot, annotator)
    assert no_worker_threads() or qtbot.waitUntil(no_worker_threads, timeout=10_000) is None


def _move_shape(layer, index, vertices) -> None:
    """Replace one shape's vertices and announce it like the end of a mouse drag does."""
    from napari.layers.base._base_constants import ActionType

    layer.events.data(
        value=layer.data, action=ActionType.CHANGING, data_indices=(index,), vertex_indices=((),)
    )
    data = list(layer.data)
    data[index] = vertices
    with layer.events.data.blocker():
        layer.data = data
    layer.events.data(
        value=layer.data, action=ActionType.CHANGED, data_indices=(index,), vertex_indices=((),)
    )


def test_removing_the_image_or_closing_the_viewer_mid_run(make_napari_viewer, qtbot, sample):
    viewer, widget, annotator = open_annotator(make_napari_viewer, sample)
    image = viewer.layers["nuclei2d"]
    draw_rectangle(annotator.boxes, gt_box(sample.labels == NUCLEUS))
    assert annotator.runner.busy
    viewer.layers.remove(image)  # while the model loads or encodes
    assert annotator.image is None
    assert "removed" in widget.status_label.text()
    qtbot.waitUntil(
        lambda: not annotator.runner.busy and no_worker_threads(), timeout=MODEL_TIMEOUT_MS
    )
    assert not (annotator.labels is not None and annotator.labels.data.any())

    # A second viewer, closed while a slice is being encoded.
    other = open_annotator(make_napari_viewer, sample)
    second = other[2]
    qtbot.waitUntil(lambda: second.runner.kind is JobKind.ENCODE, timeout=MODEL_TIMEOUT_MS)
    other[0].close()
    assert second.image is None
    qtbot.waitUntil(
        lambda: not second.runner.busy and no_worker_threads(), timeout=MODEL_TIMEOUT_MS
    )


def test_the_annotate_command_opens_a_sample_with_the_widget_docked(
    make_napari_viewer, qtbot, monkeypatch
):
    import napari

    from napari_swinlitemedsam._napari.launch import open_viewer

    # The command's viewer, made by the test fixture (which registers the plugin once per test).
    monkeypatch.setattr(napari, "Viewer", lambda title="": make_napari_viewer(title=title))
    viewer, widget = open_viewer([], "nuclei2d")
    try:
        assert isinstance(widget, BoxAnnotatorWidget)
        assert widget.annotator.image is viewer.layers["nuclei2d"]
        assert viewer.layers["nuclei2d reference"].visible is False
        assert widget.annotator.boxes.mode == "add_rectangle"
    finally:
        assert widget.close_annotator()
        viewer.close()
    qtbot.waitUntil(no_worker_threads, timeout=MODEL_TIMEOUT_MS)


def test_a_model_that_cannot_load_is_reported_not_raised(make_napari_viewer, qtbot, monkeypatch):
    import napari_swinlitemedsam._napari.annotator_jobs as annotator_jobs_module

    errors = []
    monkeypatch.setattr(annotator_jobs_module, "show_error", errors.append)
    viewer = make_napari_viewer()
    widget = BoxAnnotatorWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Box annotator")
    widget.annotator.set_model(str(Path(__file__)), "cpu", "not a weight file")
    qtbot.waitUntil(
        lambda: bool(errors) and not widget.annotator.runner.busy, timeout=MODEL_TIMEOUT_MS
    )
    assert widget.annotator.predictor is None
    assert "test_widget.py" in errors[0]
    assert widget.status_label.text().startswith("No model:")


def test_masks_can_go_into_a_labels_layer_the_user_chooses(make_napari_viewer, qtbot, sample):
    viewer = make_napari_viewer()
    viewer.add_image(sample.image, name="nuclei2d")
    mine = viewer.add_labels(np.zeros(sample.image.shape, np.uint16), name="my labels")
    mine.data[5:9, 5:9] = 7
    wrong = viewer.add_labels(np.zeros((10, 10), np.uint8), name="wrong shape")
    widget = BoxAnnotatorWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Box annotator")
    annotator = widget.annotator
    created = annotator.labels
    assert created is not mine and created.name == "nuclei2d masks"

    widget.labels_choice.value = mine  # the magicgui chooser attaches on its own
    assert annotator.labels is mine
    assert annotator.state.next_object_id(int(mine.data.max())) == 8
    widget.labels_choice.value = wrong
    assert annotator.labels is mine  # refused, with the reason in the status line
    assert widget.labels_choice.value is mine
    assert "shaped like the image" in widget.status_label.text()

    # The shortcuts are bound on this viewer, work, and are none of napari's defaults.
    from napari.utils.key_bindings import coerce_keybinding
    from napari.utils.shortcuts import default_shortcuts

    napari_keys = {binding for bindings in default_shortcuts.values() for binding in bindings}
    for key, _ in SHORTCUTS:
        assert coerce_keybinding(key) in viewer.keymap
        assert coerce_keybinding(key) not in napari_keys, key
    viewer.keymap[coerce_keybinding("Shift-O")](viewer)
    assert widget.options.overwrite_box.isChecked() and annotator.overwrite
    viewer.keymap[coerce_keybinding("Shift-C")](viewer)
    assert widget.options.negative_button.isChecked()
    assert widget.close_annotator()
    assert coerce_keybinding("Shift-O") not in viewer.keymap
    qtbot.waitUntil(no_worker_threads, timeout=MODEL_TIMEOUT_MS)


def test_an_image_that_is_not_2d_or_3d_is_refused_with_a_reason(
    make_napari_viewer, qtbot, monkeypatch
):
    import napari_swinlitemedsam._napari.widget as widget_module

    errors = []
    monkeypatch.setattr(widget_module, "show_error", errors.append)
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((2, 3, 16, 16), np.uint8), name="4d")
    widget = BoxAnnotatorWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Box annotator")
    assert widget.annotator.image is None
    assert len(errors) == 1 and "(D, H, W)" in errors[0]
    assert "(D, H, W)" in widget.status_label.text()
    viewer.add_points(np.zeros((1, 4)))  # another layer arriving does not retry the refused image
    assert len(errors) == 1
    assert widget.close_annotator()
    qtbot.waitUntil(no_worker_threads, timeout=MODEL_TIMEOUT_MS)
