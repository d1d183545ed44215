"""Faults and interruptions in a real napari viewer: layers removed, the image or the model
switched while a worker runs, boxes drawn faster than they decode, out of memory, a job that
dies half-way. The model is a stand-in whose encoder waits at a gate the test opens, so "while a
worker runs" is an exact moment, not a race; the napari side (layers, workers, undo) is real.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import napari_swinlitemedsam._napari.annotator_jobs as annotator_jobs_module
from gated_segmenter import gated_predictor
from napari_helpers import (
    MODEL_TIMEOUT_MS,
    click_without_dragging,
    draw_rectangle,
    no_worker_threads,
    wait_idle,
)
from napari_swinlitemedsam._napari.widget import BoxAnnotatorWidget
from napari_swinlitemedsam.annotation import slice_work
from napari_swinlitemedsam.io.samples import load_sample

WAIT_MS = 60_000
BOX = np.array([20, 30, 70, 90])


@pytest.fixture
def image():
    """A real 128x128 crop of the bundled nuclei image."""
    return load_sample("nuclei2d").image[:128, :128]


@pytest.fixture
def models(monkeypatch):
    """Two gated stand-in models, served by name instead of loading weights."""
    served = {"litemedsam": gated_predictor(0), "other": gated_predictor(1)}
    monkeypatch.setattr(
        slice_work, "load_predictor", lambda name, *args, **kwargs: (served[name], 0.0)
    )
    return served


@pytest.fixture
def errors(monkeypatch):
    shown = []
    monkeypatch.setattr(annotator_jobs_module, "show_error", shown.append)
    return shown


def open_widget(make_napari_viewer, data, name="img"):
    viewer = make_napari_viewer()
    viewer.add_image(data, name=name)
    widget = BoxAnnotatorWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Box annotator")
    return viewer, widget, widget.annotator


def hold_encoder(qtbot, predictor) -> None:
    """Close the encoder's gate and wait until a job is blocked at it."""
    segmenter = predictor.model
    segmenter.gate.clear()
    qtbot.waitUntil(segmenter.waiting.is_set, timeout=WAIT_MS)


def finish(qtbot, widget) -> None:
    assert widget.close_annotator()
    qtbot.waitUntil(no_worker_threads, timeout=MODEL_TIMEOUT_MS)


@pytest.mark.parametrize("removed", ["masks", "boxes"])
def test_removing_the_masks_or_boxes_layer_mid_run_loses_nothing(
    make_napari_viewer, qtbot, image, models, errors, removed
):
    viewer, widget, annotator = open_widget(make_napari_viewer, image)
    model = models["litemedsam"]
    model.model.gate.clear()
    qtbot.waitUntil(model.model.waiting.is_set, timeout=WAIT_MS)  # encoding the image, held
    labels = annotator.labels
    draw_rectangle(annotator.boxes, BOX)
    labels.data[100:110, 100:110] = 5  # hand-painted while the model works
    painted = labels.data.copy()
    layer = labels if removed == "masks" else annotator.boxes
    viewer.layers.remove(layer)
    assert annotator.image is None
    assert "was removed" in widget.status_label.text()
    model.model.gate.set()
    qtbot.waitUntil(lambda: not annotator.runner.busy and no_worker_threads(), timeout=WAIT_MS)
    np.testing.assert_array_equal(labels.data, painted)  # the box's mask never landed anywhere
    assert errors == []
    finish(qtbot, widget)


def test_switching_the_image_mid_run_writes_nothing_into_the_old_masks(
    make_napari_viewer, qtbot, image, models, errors
):
    viewer, widget, annotator = open_widget(make_napari_viewer, image, "first")
    model = models["litemedsam"]
    hold_encoder(qtbot, model)
    old_labels = annotator.labels
    draw_rectangle(annotator.boxes, BOX)
    second = viewer.add_image(image[::-1].copy(), name="second")
    widget._attach(second, None)
    assert annotator.image is second and annotator.labels is not old_labels
    model.model.gate.set()
    qtbot.waitUntil(lambda: not annotator.runner.busy, timeout=WAIT_MS)
    assert not old_labels.data.any()

    draw_rectangle(annotator.boxes, BOX)
    wait_idle(qtbot, annotator, timeout=WAIT_MS)
    assert list(annotator.state.objects) == [1]  # the new masks layer counts from 1 again
    assert (annotator.labels.data == 1).any()
    assert not old_labels.data.any()
    assert errors == []
    finish(qtbot, widget)


def test_switching_the_model_mid_run_decodes_queued_boxes_with_the_new_model(
    make_napari_viewer, qtbot, image, models, errors
):
    _, widget, annotator = open_widget(make_napari_viewer, image)
    first, other = models["litemedsam"], models["other"]
    hold_encoder(qtbot, first)
    draw_rectangle(annotator.boxes, BOX)
    annotator.set_model("other", "cpu", "other model")
    first.model.gate.set()
    wait_idle(qtbot, annotator, timeout=WAIT_MS)
    assert annotator.predictor is other
    assert first.model.decode_calls == 0 and other.model.decode_calls == 1
    assert (annotator.labels.data == 1).any()
    assert errors == []
    finish(qtbot, widget)


def test_boxes_drawn_faster_than_they_decode_are_decoded_together(
    make_napari_viewer, qtbot, image, models, errors
):
    _, widget, annotator = open_widget(make_napari_viewer, image)
    model = models["litemedsam"]
    hold_encoder(qtbot, model)
    boxes = [np.array([x, 10, x + 15, 40]) for x in range(5, 100, 20)]
    for box in boxes:
        draw_rectangle(annotator.boxes, box)
    model.model.gate.set()
    wait_idle(qtbot, annotator, timeout=WAIT_MS)
    # The five queued boxes go to the decoder together, split only by the predictor's batch size.
    assert model.model.decode_calls == math.ceil(len(boxes) / model.max_batch) < len(boxes)
    assert sorted(annotator.state.objects) == [1, 2, 3, 4, 5]
    assert errors == []
    finish(qtbot, widget)


@pytest.mark.parametrize("shape", [(2, 3, 32, 32), (2, 2, 3, 32, 32)])
def test_time_series_and_channel_stacks_are_refused_with_the_way_out(
    make_napari_viewer, qtbot, models, monkeypatch, shape
):
    import napari_swinlitemedsam._napari.widget as widget_module

    shown = []
    monkeypatch.setattr(widget_module, "show_error", shown.append)
    data = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
    viewer, widget, annotator = open_widget(make_napari_viewer, data, "movie")
    assert annotator.image is None
    assert len(shown) == 1 and "Split Stack" in shown[0] and "(D, H, W)" in shown[0]
    # Doing what the message says (once per extra axis) gives a layer the annotator takes.
    from napari.layers import Image
    from napari.layers._layer_actions import _split_stack

    layer = viewer.layers["movie"]
    for _ in range(len(shape) - 3):
        viewer.layers.selection.active = layer
        _split_stack(viewer.layers)
        layer = [item for item in viewer.layers if isinstance(item, Image)][-shape[0]]
    assert annotator.image is layer  # taken up as soon as it arrived
    assert annotator.labels.data.shape == shape[-3:]
    finish(qtbot, widget)


def test_fine_tuning_takes_the_saved_items_of_an_open_series(
    make_napari_viewer, qtbot, image, models, tmp_path
):
    from skimage.io import imsave

    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(3):
        imsave(
            folder / f"field_{index}.png", np.roll(image, 9 * index, axis=1), check_contrast=False
        )
    viewer = make_napari_viewer()
    widget = BoxAnnotatorWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Box annotator")
    assert widget.finetune_section.body is widget.finetune_panel
    assert not widget.finetune_panel.isVisibleTo(widget)  # folded until asked for
    widget.finetune_section.set_expanded(True)
    assert widget.finetune_panel.isVisibleTo(widget)
    assert widget.series_panel.open_series([folder], tmp_path / "labels", "tiff")
    annotator = widget.annotator
    wait_idle(qtbot, annotator, timeout=WAIT_MS)
    annotator.labels.data[10:30, 10:30] = 1  # item 0 labelled by hand
    annotator.labels.refresh()
    assert widget.series_panel.session.step(+1)
    qtbot.waitUntil(lambda: widget.series_panel.session.current == 1, timeout=WAIT_MS)
    wait_idle(qtbot, annotator, timeout=WAIT_MS)
    pairs = widget._series_training_pairs()  # item 1 is on screen, item 2 untouched
    assert len(pairs) == 1
    series_image, series_labels = pairs[0]
    np.testing.assert_array_equal(series_image, image)
    assert series_labels.sum() == 400 and series_labels.max() == 1
    finish(qtbot, widget)


def test_out_of_memory_is_a_message_and_the_next_box_still_works(
    make_napari_viewer, qtbot, image, models, errors
):
    viewer, widget, annotator = open_widget(make_napari_viewer, image)
    model = models["litemedsam"]
    hold_encoder(qtbot, model)
    model.model.encode_error = RuntimeError(
        "DefaultCPUAllocator: not enough memory: you tried to allocate 4294967296 bytes."
    )
    annotator.labels.data[100:110, 100:110] = 9  # hand-painted
    painted = annotator.labels.data.copy()
    model.model.gate.set()
    qtbot.waitUntil(lambda: bool(errors) and not annotator.runner.busy, timeout=WAIT_MS)
    qtbot.wait(500)
    assert len(errors) == 1  # reported once, not retried in a loop until the user acts
    assert errors[0].startswith("Box annotator: out of memory while encoding the slice")
    assert "crop" in widget.status_label.text()
    np.testing.assert_array_equal(annotator.labels.data, painted)

    model.model.encode_error = None  # memory freed: the user draws again
    draw_rectangle(annotator.boxes, BOX)
    wait_idle(qtbot, annotator, timeout=WAIT_MS)
    (object_id,) = annotator.state.objects
    assert (annotator.labels.data == object_id).any()
    assert (annotator.labels.data == 9).sum() == 100
    finish(qtbot, widget)


def test_a_propagation_that_dies_half_way_leaves_the_masks_as_they_were(
    make_napari_viewer, qtbot, models, errors
):
    stack = load_sample("nuclei3d").image[20:32, :96, :96]
    viewer, widget, annotator = open_widget(make_napari_viewer, stack, "stack")
    viewer.dims.set_current_step(0, 6)
    wait_idle(qtbot, annotator, timeout=WAIT_MS)
    draw_rectangle(annotator.boxes, np.array([20, 20, 60, 60]), slice_index=6)
    wait_idle(qtbot, annotator, timeout=WAIT_MS)
    (object_id,) = annotator.state.objects
    annotator.labels.data[9, 0:10, 0:10] = 7  # hand-painted on a slice the run will reach
    before = annotator.labels.data.copy()
    assert (before == object_id).any()

    segmenter = models["litemedsam"].model
    segmenter.fail_decode_at = segmenter.decode_calls + 3  # dies after a few slices
    annotator.propagate(object_id)
    qtbot.waitUntil(lambda: bool(errors) and not annotator.runner.busy, timeout=WAIT_MS)
    assert "RuntimeError while propagating through the stack" in errors[0]
    assert "Nothing was changed" in errors[0]
    np.testing.assert_array_equal(annotator.labels.data, before)
    assert not widget.status_label.text().endswith("propagated")

    segmenter.fail_decode_at = None  # the same run, now without the fault, changes the masks
    annotator.propagate(object_id)
    wait_idle(qtbot, annotator, timeout=WAIT_MS)
    assert len(errors) == 1
    assert {z for z in range(stack.shape[0]) if (annotator.labels.data[z] == object_id).any()} != {
        6
    }
    assert (annotator.labels.data == 7).sum() == 100
    finish(qtbot, widget)


def test_a_click_without_dragging_adds_no_object_and_says_why(
    make_napari_viewer, qtbot, image, models, errors
):
    viewer, widget, annotator = open_widget(make_napari_viewer, image)
    wait_idle(qtbot, annotator, timeout=WAIT_MS)
    click_without_dragging(annotator.boxes, (40.0, 30.0))
    assert len(annotator.boxes.data) == 0  # napari's speck of a rectangle was taken away
    assert annotator.state.objects == {} and annotator.scheduler.idle
    status = widget.status_label.text()
    assert status.startswith("No object added:") and "click without dragging" in status
    assert not annotator.labels.data.any()

    # Zoomed far out (6 image pixels per screen pixel) napari's click rectangle covers 15
    # pixels: still a click, still no object.
    canvas_scale = annotator.boxes.scale_factor
    annotator.boxes.scale_factor = 6.0
    click_without_dragging(annotator.boxes, (80.0, 60.0))
    assert len(annotator.boxes.data) == 0
    assert annotator.state.objects == {} and not annotator.labels.data.any()
    assert widget.status_label.text().startswith("No object added:")
    annotator.boxes.scale_factor = canvas_scale

    # A box dragged partly off the image is clipped to it and segmented.
    draw_rectangle(annotator.boxes, [100, 110, 140, 150])
    wait_idle(qtbot, annotator, timeout=WAIT_MS)
    (obj,) = annotator.state.objects.values()
    assert obj.boxes[None].tolist() == [100, 110, 127, 127]
    assert annotator.labels.data.any() and errors == []
    finish(qtbot, widget)
