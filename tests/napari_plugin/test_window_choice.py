"""The widget's intensity window: the choice changes what the encoder receives and the cache key.

The model is the instant stand-in of tests/stub_segmenter.py (it records nothing about masks;
here only its encoder input matters); the image is 3 slices of the real head CT sample in HU.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_helpers import wait_idle
from napari_swinlitemedsam._napari.widget import WINDOW_CHOICES, BoxAnnotatorWidget
from napari_swinlitemedsam.annotation import slice_work
from napari_swinlitemedsam.annotation.slice_work import prepare_image
from napari_swinlitemedsam.inference.intensity import to_uint8
from napari_swinlitemedsam.io.samples import load_sample
from stub_segmenter import stub_predictor

KEY = 1


@pytest.fixture
def recorded(monkeypatch):
    """The stand-in predictor, served instead of the weights; its encoder inputs are kept."""
    predictor = stub_predictor()
    inputs = []
    encode = predictor.model.encode

    def recording(images):
        inputs.append(images.detach().clone())
        return encode(images)

    predictor.model.encode = recording
    monkeypatch.setattr(slice_work, "load_predictor", lambda *args, **kwargs: (predictor, 0.0))
    return predictor, inputs


def choose(widget, window) -> None:
    assert window in [value for _, value in WINDOW_CHOICES], window
    widget.window_choice.value = window


def as_array(prepared) -> np.ndarray:
    """The whole prepared stack (the annotator keeps a lazy VolumeSlices)."""
    return np.stack([prepared[z] for z in range(len(prepared))])


def test_prepare_image_applies_the_window():
    ct = load_sample("head_ct").image[15:18]
    brain = as_array(prepare_image(ct, True, "brain"))
    np.testing.assert_array_equal(brain, to_uint8(ct, window="brain"))
    auto = as_array(prepare_image(ct, True, None))
    np.testing.assert_array_equal(auto, to_uint8(ct))  # auto: W400
    bounds = (-50.0, 150.0)
    custom = as_array(prepare_image(ct, True, bounds))
    np.testing.assert_array_equal(custom, to_uint8(ct, window=bounds))
    assert not np.array_equal(brain, auto)


def test_window_choice_changes_encoder_input_and_cache_key(make_napari_viewer, qtbot, recorded):
    _, inputs = recorded
    ct = load_sample("head_ct").image[15:18]
    viewer = make_napari_viewer()
    image = viewer.add_image(ct, name="ct", contrast_limits=(-100.0, 300.0))
    widget = BoxAnnotatorWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Box annotator")
    annotator = widget.annotator
    assert [choice for _, choice in WINDOW_CHOICES][:5] == [
        "auto",
        "soft_tissue",
        "lung",
        "bone",
        "brain",
    ]
    viewer.dims.set_current_step(0, KEY)
    qtbot.waitUntil(lambda: KEY in annotator.scheduler.encoded, timeout=60_000)
    wait_idle(qtbot, annotator)
    auto_key, auto_input = annotator.scheduler.image_key, inputs[-1]
    np.testing.assert_array_equal(as_array(annotator._image_u8), to_uint8(ct))

    choose(widget, "brain")
    assert annotator.window == "brain" and annotator.scheduler.image_key != auto_key
    qtbot.waitUntil(lambda: KEY in annotator.scheduler.encoded, timeout=60_000)
    wait_idle(qtbot, annotator)
    np.testing.assert_array_equal(as_array(annotator._image_u8), to_uint8(ct, window="brain"))
    assert not np.allclose(inputs[-1].numpy(), auto_input.numpy())  # the encoder saw W80

    choose(widget, "displayed")  # the layer's contrast limits at the moment of choosing
    assert annotator.window == tuple(image.contrast_limits) == (-100.0, 300.0)
    qtbot.waitUntil(lambda: annotator._image_u8 is not None, timeout=60_000)
    wait_idle(qtbot, annotator)
    np.testing.assert_array_equal(
        as_array(annotator._image_u8), to_uint8(ct, window=(-100.0, 300.0))
    )

    choose(widget, "auto")  # back to auto: the first key again, so its encodings are reused
    assert annotator.scheduler.image_key == auto_key
