"""Choosing "Swin-LiteMedSAM (download, ~N MB)" in the real viewer, against a server on 127.0.0.1.

The server sends a Swin-LiteMedSAM checkpoint with synthetic weights (the official June 2024 key
listing): the flow is what is tested, not the masks' quality.
"""

from __future__ import annotations

import numpy as np
import pytest

from local_http import LocalServer, Route, checkpoint_bytes
from napari_helpers import MODEL_TIMEOUT_MS, draw_rectangle, wait_idle
from napari_swinlitemedsam._napari import model_download_row
from napari_swinlitemedsam._napari.widget import BoxAnnotatorWidget
from napari_swinlitemedsam.io.samples import load_sample
from napari_swinlitemedsam.model.checkpoint import MODEL_DIR_ENV

DOWNLOAD_LABEL = "Swin-LiteMedSAM (download, ~147 MB)"


@pytest.fixture(scope="module")
def server():
    with LocalServer() as running:
        yield running


@pytest.fixture
def model_dir(tmp_path, monkeypatch):
    folder = tmp_path / "models"
    monkeypatch.setenv(MODEL_DIR_ENV, str(folder))
    return folder


def open_widget(make_napari_viewer, qtbot, url):
    viewer = make_napari_viewer()
    sample = load_sample("nuclei2d")
    viewer.add_image(sample.image[:160, :160], name="nuclei")
    widget = BoxAnnotatorWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Box annotator")
    combo = widget.model_choice.native
    qtbot.waitUntil(lambda: combo.findText(DOWNLOAD_LABEL) >= 0, timeout=MODEL_TIMEOUT_MS)
    questions = []
    widget.download_row.ask = lambda question: questions.append(question) or True
    widget.download_row.urls = [url]
    return viewer, widget, questions


def choose(widget, text):
    index = widget.model_choice.native.findText(text)
    widget.model_choice.native.setCurrentIndex(index)  # what a user's choice does


def close(qtbot, widget):
    qtbot.waitUntil(widget.close_annotator, timeout=MODEL_TIMEOUT_MS)


@pytest.mark.slow
def test_choosing_the_download_entry_downloads_loads_and_segments(
    make_napari_viewer, qtbot, server, model_dir
):
    server.routes["/ckpt"] = Route(checkpoint_bytes())
    viewer, widget, questions = open_widget(make_napari_viewer, qtbot, server.url("/ckpt"))
    annotator = widget.annotator
    qtbot.waitUntil(lambda: annotator.predictor is not None, timeout=MODEL_TIMEOUT_MS)
    wait_idle(qtbot, annotator)
    seen = []

    choose(widget, DOWNLOAD_LABEL)
    assert len(questions) == 1 and str(model_dir / "Swin_LiteMedSAM.pth") in questions[0]
    assert not widget.download_row.isHidden() and widget.download_row.busy
    widget.download_row.worker.yielded.connect(lambda step: seen.append(step.done))
    assert widget.model_choice.native.currentText() == "LiteMedSAM (bundled)"  # until installed
    qtbot.waitUntil(lambda: annotator.model_label == "Swin-LiteMedSAM", timeout=MODEL_TIMEOUT_MS)
    qtbot.waitUntil(lambda: not widget.download_row.busy, timeout=MODEL_TIMEOUT_MS)
    wait_idle(qtbot, annotator)
    assert seen and seen[-1] == len(checkpoint_bytes())  # progress reached the whole file
    assert (model_dir / "Swin_LiteMedSAM.pth").read_bytes() == checkpoint_bytes()
    assert widget.model_choice.native.currentText() == "Swin-LiteMedSAM"
    assert widget.model_choice.native.currentData() == "swin-litemedsam"
    assert widget.model_choice.native.findText(DOWNLOAD_LABEL) < 0
    assert annotator.predictor.model_name == "swin-litemedsam"
    assert len(questions) == 1 and widget.download_row.isHidden()

    before = annotator.last_decode_seconds
    draw_rectangle(annotator.boxes, np.array([40, 40, 90, 100]))
    qtbot.waitUntil(lambda: annotator.last_decode_seconds != before, timeout=MODEL_TIMEOUT_MS)
    wait_idle(qtbot, annotator)
    assert annotator.last_error == ""
    assert set(np.unique(annotator.labels.data)) <= {0, 1}
    close(qtbot, widget)


def test_cancel_installs_nothing_and_keeps_the_model(
    make_napari_viewer, qtbot, server, model_dir, monkeypatch
):
    server.routes["/slow"] = Route(checkpoint_bytes(), pause_s=0.2)  # ~13 s for the whole file
    viewer, widget, questions = open_widget(make_napari_viewer, qtbot, server.url("/slow"))
    annotator = widget.annotator
    qtbot.waitUntil(lambda: annotator.predictor is not None, timeout=MODEL_TIMEOUT_MS)
    wait_idle(qtbot, annotator)
    predictor = annotator.predictor

    choose(widget, DOWNLOAD_LABEL)
    row = widget.download_row
    qtbot.waitUntil(lambda: row.label.text().startswith("Downloading:"), timeout=60_000)
    row.cancel_button.click()
    qtbot.waitUntil(lambda: not row.busy, timeout=MODEL_TIMEOUT_MS)
    assert not model_dir.exists() or list(model_dir.iterdir()) == []
    assert annotator.predictor is predictor
    assert widget.model_choice.native.currentText() == "LiteMedSAM (bundled)"
    assert widget.model_choice.native.findText(DOWNLOAD_LABEL) >= 0  # can be chosen again
    assert [c.download for c in widget._models if c.name_or_path == "swin-litemedsam"] == [True]

    # A failing download leaves everything as it was too, and says why.
    errors = []
    monkeypatch.setattr(model_download_row, "show_error", errors.append)
    widget.download_row.urls = [server.url("/missing")]
    choose(widget, DOWNLOAD_LABEL)
    qtbot.waitUntil(lambda: not row.busy, timeout=MODEL_TIMEOUT_MS)
    assert annotator.predictor is predictor and len(questions) == 2
    assert len(errors) == 1 and "HTTP 404" in errors[0]
    assert f"put it at {model_dir / 'Swin_LiteMedSAM.pth'}" in errors[0]
    close(qtbot, widget)
