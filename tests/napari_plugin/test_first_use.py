"""The first use of a model on a machine in a real napari viewer: no decision stored yet, so the
model starts on torch fp32 and the runtime self-check runs between the user's jobs; the
window's encoder row says so, then names what was measured; the next start reads the stored
decision. Real bundled LiteMedSAM weights, real 2D sample."""

from __future__ import annotations

import numpy as np
import pytest

from napari_helpers import MODEL_TIMEOUT_MS, draw_rectangle, gt_box, wait_idle
from napari_swinlitemedsam._napari.widget import BoxAnnotatorWidget
from napari_swinlitemedsam.annotation.jobs import JobKind
from napari_swinlitemedsam.inference.runtime_choice import CHOICE_DIR_ENV
from napari_swinlitemedsam.io.samples import load_sample

NUCLEUS = 175  # a large nucleus of the sample (see test_widget.py)


@pytest.mark.slow
def test_the_first_box_does_not_wait_for_the_runtime_self_check(
    make_napari_viewer, qtbot, monkeypatch, tmp_path
):
    monkeypatch.setenv(CHOICE_DIR_ENV, str(tmp_path / "no-decision-yet"))
    sample = load_sample("nuclei2d")
    viewer = make_napari_viewer()
    viewer.add_image(sample.image, name="nuclei2d")
    widget = BoxAnnotatorWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Box annotator")
    annotator = widget.annotator
    draw_rectangle(annotator.boxes, gt_box(sample.labels == NUCLEUS))
    qtbot.waitUntil(
        lambda: annotator.labels is not None and (annotator.labels.data > 0).any(),
        timeout=MODEL_TIMEOUT_MS,
    )
    predictor = annotator.predictor
    # The box was decoded before any step of the check (a box comes first), on torch fp32.
    check = predictor.pending_self_check
    assert check is not None and check.steps_done == 0
    assert (predictor.runtime, predictor.decoder_runtime) == ("torch", "torch")
    assert widget.encoder_label.text().startswith("torch fp32 (for now: the self-check")
    first_mask = annotator.labels.data == 1

    # Left alone, the window runs the check to its end and switches the predictor.
    wait_idle(qtbot, annotator)
    qtbot.waitUntil(lambda: predictor.pending_self_check is None, timeout=MODEL_TIMEOUT_MS)
    wait_idle(qtbot, annotator)
    assert check.finished and check.steps_done >= 4  # exports, and two rounds of two or more
    choice = predictor.runtime_choice
    assert choice.how == "measured" and choice.seconds.keys() >= {"torch fp32"}
    assert widget.encoder_label.text() == predictor.describe_runtimes()
    assert "measured" in widget.encoder_label.text()
    assert (predictor.runtime, predictor.decoder_runtime) == (choice.runtime, choice.decoder)
    assert not annotator.scheduler.runtime_check_pending
    assert annotator.runner.kind is not JobKind.RUNTIME_CHECK
    # The same box again, now on the chosen runtimes: the same mask within float32 rounding.
    annotator.boxes.data = []
    wait_idle(qtbot, annotator)
    draw_rectangle(annotator.boxes, gt_box(sample.labels == NUCLEUS))
    wait_idle(qtbot, annotator)
    again = annotator.labels.data == int(annotator.labels.data.max())
    assert again.any() and int((again != first_mask).sum()) <= 2

    # A second window (a new start) reads the stored decision: nothing left to measure.
    other_viewer = make_napari_viewer()
    other_viewer.add_image(sample.image, name="nuclei2d")
    other = BoxAnnotatorWidget(other_viewer)
    other_viewer.window.add_dock_widget(other, name="Box annotator")
    qtbot.waitUntil(lambda: other.annotator.predictor is not None, timeout=MODEL_TIMEOUT_MS)
    assert other.annotator.predictor.pending_self_check is None
    assert other.annotator.predictor.runtime_choice.how == "cached"
    wait_idle(qtbot, other.annotator)
    np.testing.assert_equal(other.annotator.predictor.runtime, predictor.runtime)
