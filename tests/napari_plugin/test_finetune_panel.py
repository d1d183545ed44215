"""The "Fine-tune on my labels" panel in a real napari viewer, with the real bundled LiteMedSAM
weights, on a 128x128 crop of the bundled nuclei2d sample whose reference labels stand for the
user's masks; and the model list that offers the result.

A fine-tuning step takes 2-15 s on a shared 2-core CPU, so the GUI runs use 3 steps.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import napari_swinlitemedsam._napari.finetune_panel as panel_module
from napari_helpers import MODEL_TIMEOUT_MS, no_worker_threads, wait_idle
from napari_swinlitemedsam._napari.finetune_panel import NOTHING_LABELLED
from napari_swinlitemedsam._napari.widget import BoxAnnotatorWidget
from napari_swinlitemedsam.annotation.finetune_job import (
    count_objects,
    default_model_name,
    time_left_text,
    training_pair,
)
from napari_swinlitemedsam.annotation.model_choices import (
    BUNDLED,
    available_models,
    download_choice,
)
from napari_swinlitemedsam.io.samples import load_sample
from napari_swinlitemedsam.model.checkpoint import (
    DISTILLED_FILENAME,
    DISTILLED_NAME,
    MODEL_DIR_ENV,
    SWIN_LITEMEDSAM_FILENAME,
    load_model,
    read_state_dict,
)
from screenshot_paths import screenshot_path

CROP = (slice(256, 384), slice(256, 384))  # 11 whole or cut nuclei
OBJECTS = 6  # the largest ones become the "user's labels"


@pytest.fixture
def model_dir(tmp_path, monkeypatch):
    folder = tmp_path / "models"
    monkeypatch.setenv(MODEL_DIR_ENV, str(folder))
    return folder


@pytest.fixture
def crop():
    """(image (128, 128) uint16, labels (128, 128) uint16 with the OBJECTS largest nuclei)."""
    sample = load_sample("nuclei2d")
    image, reference = sample.image[CROP].copy(), sample.labels[CROP]
    ids, sizes = np.unique(reference[reference > 0], return_counts=True)
    keep = ids[np.argsort(sizes)[::-1][:OBJECTS]]
    labels = np.where(np.isin(reference, keep), reference, 0).astype(np.uint16)
    return image, labels


def open_panel(viewer, image, labels=None):
    """The image, a docked Box annotator on it, and the panel docked on its own."""
    viewer.add_image(image, name="nuclei crop")
    widget = BoxAnnotatorWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Box annotator")
    panel = widget.make_finetune_panel()
    viewer.window.add_dock_widget(panel, name="Fine-tune")
    if labels is not None:
        widget.annotator.labels.data[...] = labels
        widget.annotator.labels.refresh()
    return widget, panel


def close(qtbot, widget, panel):
    assert panel.close_panel()
    assert widget.close_annotator()
    qtbot.waitUntil(no_worker_threads, timeout=MODEL_TIMEOUT_MS)


@pytest.mark.slow  # fine-tunes the real LiteMedSAM
def test_finetuning_from_the_panel_saves_lists_and_switches_to_the_new_model(
    make_napari_viewer, qtbot, model_dir, crop
):
    image, labels = crop
    viewer = make_napari_viewer()
    widget, panel = open_panel(viewer, image, labels)
    annotator = widget.annotator
    qtbot.waitUntil(lambda: annotator.predictor is not None, timeout=MODEL_TIMEOUT_MS)
    wait_idle(qtbot, annotator)
    base_state = {k: v.clone() for k, v in annotator.predictor.model.state_dict().items()}
    panel.name_edit.setText("nuclei-crop")
    panel.steps_spin.setValue(3)
    seen = []
    panel.saved.connect(seen.append)

    panel.start_button.click()
    assert panel.is_running and panel.cancel_button.isEnabled()
    assert not panel.start_button.isEnabled()
    qtbot.waitUntil(lambda: not panel.is_running, timeout=MODEL_TIMEOUT_MS)

    path = model_dir / "nuclei-crop.pth"
    assert seen == [path]
    assert path.is_file() and (model_dir / "nuclei-crop.md").is_file()
    card = json.loads((model_dir / "nuclei-crop.json").read_text())
    assert card["base_model"] == "litemedsam" and card["network"] == "litemedsam"
    assert (card["images"], card["objects"], card["steps"]) == (1, OBJECTS, 3)
    assert np.isfinite(card["final_loss"]) and card["train_encoder"] is False
    assert panel.progress_bar.value() == 3
    assert str(path) in panel.status_label.text()

    # The weights load as LiteMedSAM; the decoder learnt, the frozen encoder did not.
    loaded = load_model(path, device="cpu").model.state_dict()
    saved = read_state_dict(path)
    assert loaded.keys() == base_state.keys()
    changed = {k for k in base_state if not torch.equal(saved[k], base_state[k])}
    assert changed and all(k.startswith(("mask_decoder.", "prompt_encoder.")) for k in changed)

    # The model list holds it under its card name; the annotator switched to it.
    choice = widget.model_choice
    assert choice.value == str(path)
    assert choice.current_choice == "Fine-tuned: nuclei-crop (from litemedsam)"
    assert choice.native.itemText(choice.native.count() - 1) == "Choose file..."
    qtbot.waitUntil(
        lambda: annotator.predictor is not None and annotator.model_label == choice.current_choice,
        timeout=MODEL_TIMEOUT_MS,
    )
    in_use = annotator.predictor.model.state_dict()
    assert all(torch.equal(in_use[k], saved[k]) for k in changed)
    # The masks were only read; the next run gets a fresh default name.
    assert np.array_equal(annotator.labels.data, labels)
    assert panel.name_edit.text().startswith("finetuned-")
    close(qtbot, widget, panel)


@pytest.mark.slow
def test_cancel_saves_nothing_and_changes_nothing(
    make_napari_viewer, qtbot, model_dir, crop, tmp_path
):
    """Also takes the documentation's screenshot of the panel at work (paused at a step)."""
    image, labels = crop
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1400, 860)
    widget, panel = open_panel(viewer, image, labels)
    annotator = widget.annotator
    qtbot.waitUntil(lambda: annotator.predictor is not None, timeout=MODEL_TIMEOUT_MS)
    wait_idle(qtbot, annotator)
    predictor, label, entries = (
        annotator.predictor,
        annotator.model_label,
        len(widget.model_choice.choices),
    )
    panel.steps_spin.setValue(60)

    assert panel.start()
    worker = panel.runner.worker
    qtbot.waitUntil(lambda: panel.progress_bar.value() >= 1, timeout=MODEL_TIMEOUT_MS)
    with qtbot.waitSignal(worker.paused, timeout=MODEL_TIMEOUT_MS):
        worker.pause()
    assert panel.status_label.text().startswith("Step ") and "left" in panel.status_label.text()
    viewer.camera.zoom = 4.5
    qtbot.wait(300)
    picture = viewer.screenshot(
        str(screenshot_path("finetune_panel.png", tmp_path)), canvas_only=False
    )
    assert picture.shape[0] > 400 and picture.shape[1] > 800
    worker.resume()

    panel.cancel_button.click()
    assert not panel.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: not panel.is_running, timeout=MODEL_TIMEOUT_MS)
    assert panel.status_label.text() == "Fine-tuning cancelled; nothing was saved."
    assert not model_dir.exists() or not any(model_dir.iterdir())
    assert annotator.predictor is predictor and annotator.model_label == label
    assert len(widget.model_choice.choices) == entries
    assert np.array_equal(annotator.labels.data, labels)
    assert panel.start_button.isEnabled() and not panel.cancel_button.isEnabled()
    close(qtbot, widget, panel)


def test_nothing_labelled_or_a_bad_name_is_refused_with_a_reason(
    make_napari_viewer, qtbot, monkeypatch, model_dir, crop
):
    told = []
    monkeypatch.setattr(panel_module, "show_info", told.append)
    viewer = make_napari_viewer()
    widget, panel = open_panel(viewer, crop[0])
    panel.start_button.click()
    assert told == [NOTHING_LABELLED] and "Label some objects first" in told[0]
    assert not panel.is_running and panel.status_label.text() == NOTHING_LABELLED

    widget.annotator.labels.data[40:50, 40:50] = 3
    panel.name_edit.setText("../escape")
    panel.start_button.click()
    assert not panel.is_running and "not allowed" in told[-1]
    panel.name_edit.setText("litemedsam")
    panel.start_button.click()
    assert not panel.is_running and "another name" in told[-1]

    # Pairs from elsewhere (a series of labelled items) are added to the annotated image's.
    extra = (np.zeros((32, 32), np.uint8), np.ones((32, 32), np.uint8))
    panel.extra_pairs = lambda: [extra]
    pairs = panel.training_pairs()
    assert len(pairs) == 2 and pairs[1][0].shape == (32, 32)
    pairs[0][1][...] = 0  # copies: the layer is not changed through them
    assert widget.annotator.labels.data[45, 45] == 3

    # Labels too small to learn from: the worker's error is shown, nothing is saved.
    failures = []
    monkeypatch.setattr(panel_module, "show_error", failures.append)
    panel.extra_pairs = None
    widget.annotator.labels.data[...] = 0
    widget.annotator.labels.data[7, 9] = 1  # 4 pixels at the model's 256 px scale
    panel.name_edit.setText("too-small")
    qtbot.waitUntil(lambda: widget.annotator.predictor is not None, timeout=MODEL_TIMEOUT_MS)
    assert panel.start()
    qtbot.waitUntil(lambda: not panel.is_running, timeout=MODEL_TIMEOUT_MS)
    assert len(failures) == 1 and "label some objects first" in failures[0]
    assert panel.status_label.text() == failures[0] and panel.start_button.isEnabled()
    assert not model_dir.exists() or not any(model_dir.iterdir())
    close(qtbot, widget, panel)


# ------------------------------------------------------------------ helpers without a viewer


def test_training_pairs_counts_names_and_time_left():
    rgba = np.zeros((8, 8, 4), np.uint8)
    labels = np.zeros((8, 8), np.uint16)
    assert training_pair(rgba, labels, rgb=True) is None
    labels[2:4, 2:4], labels[5:7, 5:7] = 4, 9
    image, copied = training_pair(rgba, labels, rgb=True)
    assert image.shape == (8, 8, 3) and copied is not labels
    with pytest.raises(ValueError, match="shaped like the image"):
        training_pair(np.zeros((9, 8)), labels, rgb=False)
    assert count_objects([labels, labels[None].repeat(2, 0)]) == 4

    from datetime import datetime

    now = datetime(2026, 3, 4, 5, 6)
    assert default_model_name(now) == "finetuned-20260304-0506"
    assert default_model_name(now, {"finetuned-20260304-0506"}) == "finetuned-20260304-0506-2"
    assert time_left_text(10.0, 5, 10) == "about 10 s left"
    assert time_left_text(120.0, 2, 10) == "about 8 min 00 s left"


def test_model_list_names_the_distilled_and_finetuned_models(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    assert available_models(folder) == [BUNDLED, download_choice("swin-litemedsam")]
    assert available_models(folder)[1].label == "Swin-LiteMedSAM (download, ~147 MB)"
    for name in (
        SWIN_LITEMEDSAM_FILENAME,
        DISTILLED_FILENAME,
        "mine.pth",
        "plain.pth",
        "broken-card.pth",
        ".partial.pth",
    ):
        (folder / name).write_bytes(b"weights")
    (folder / "mine.json").write_text(
        json.dumps(
            {"name": "mine", "file": "mine.pth", "base_model": "/x/swin-litemedsam-distilled.pth"}
        )
    )
    (folder / "broken-card.json").write_text("{not json")
    choices = {choice.label: choice.name_or_path for choice in available_models(folder)}
    assert choices == {
        "LiteMedSAM (bundled)": "litemedsam",
        "Swin-LiteMedSAM": "swin-litemedsam",
        # by name, so loading it checks its sha256 (and says so when the .sha256 is missing)
        "Swin-LiteMedSAM distilled": DISTILLED_NAME,
        "Own weights: broken-card.pth": str(folder / "broken-card.pth"),
        "Fine-tuned: mine (from swin-litemedsam-distilled)": str(folder / "mine.pth"),
        "Own weights: plain.pth": str(folder / "plain.pth"),
    }
    (folder / f"{DISTILLED_FILENAME}.sha256").write_text("0" * 64)
    assert DISTILLED_NAME in [choice.name_or_path for choice in available_models(folder)]
