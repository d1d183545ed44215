"""Swin-LiteMedSAM's decoder step on the graph runtimes: the same masks as torch, with the
derived points and scribble and the user's clicks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_swinlitemedsam.inference.embedding_cache import EmbeddingCache
from napari_swinlitemedsam.inference.graph_skip_decoder import GraphSkipDecoder
from napari_swinlitemedsam.inference.graph_steps import has_graph_decoder
from napari_swinlitemedsam.inference.predictor import BoxPredictor
from napari_swinlitemedsam.model.registry import (
    PROMPTS_BOX_POINTS_SCRIBBLE,
    build_litemedsam,
    build_swin_litemedsam,
)

# Another runtime sums the same float32 products in another order: logits differ by ~1e-6 of
# their range; 1e-4 leaves room for other CPUs' kernels and still catches a wrong graph.
LOGIT_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def random_swin():
    """Seed 1, named "random-swin": its decoder graph is exported once per test session."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        return build_swin_litemedsam().eval()


def _image() -> np.ndarray:
    return np.random.default_rng(6).integers(0, 256, size=(96, 128), dtype=np.uint8)


def _assert_same_prediction(got, expected) -> None:
    scale = float(np.abs(expected.low_res_logits).max())
    np.testing.assert_allclose(
        got.low_res_logits, expected.low_res_logits, rtol=0, atol=LOGIT_TOLERANCE * scale
    )
    np.testing.assert_allclose(got.scores, expected.scores, rtol=0, atol=1e-4)
    flipped = got.masks != expected.masks  # only where a logit is that close to 0
    assert flipped.sum() <= 0.001 * flipped.size


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_swin_boxes_and_clicks_decode_on_the_graph_like_in_torch(random_swin, runtime, monkeypatch):
    if runtime == "openvino":
        pytest.importorskip("openvino")  # the optional extra
    in_torch = BoxPredictor(
        random_swin, PROMPTS_BOX_POINTS_SCRIBBLE, EmbeddingCache(), "random-swin"
    )
    on_graph = BoxPredictor(
        random_swin,
        PROMPTS_BOX_POINTS_SCRIBBLE,
        EmbeddingCache(),
        "random-swin",
        decoder_runtime=runtime,
    )
    assert has_graph_decoder(random_swin)
    assert on_graph.decoder_runtime == runtime
    assert on_graph.describe_runtimes().endswith(f"; boxes decoded on {runtime}")
    on_graph.set_encoded(
        in_torch.set_image(_image())
    )  # the same features: only the decoder differs
    boxes = np.array([[10, 12, 70, 60], [40, 30, 120, 90], [0, 0, 127, 95]])

    calls = []
    real_decode = random_swin.decode
    monkeypatch.setattr(
        random_swin, "decode", lambda *a, **k: calls.append(1) or real_decode(*a, **k)
    )
    for count in (1, 3):  # the graph's box count is dynamic
        expected = in_torch.predict(boxes[:count])
        calls.clear()
        _assert_same_prediction(on_graph.predict(boxes[:count]), expected)
        assert not calls  # the graph decoded, not torch
    # clicks are more points: the point count is dynamic too
    points = np.array([[[30, 30], [50, 40]], [[60, 50], [100, 80]]])
    labels = np.array([[1, 0], [0, 1]])
    expected = in_torch.predict(boxes[:2], points=points, point_labels=labels)
    calls.clear()
    _assert_same_prediction(
        on_graph.predict(boxes[:2], points=points, point_labels=labels), expected
    )
    assert not calls


def test_the_skip_rows_are_kept_for_the_next_box_and_renewed_for_a_new_image(random_swin):
    predictor = BoxPredictor(
        random_swin,
        PROMPTS_BOX_POINTS_SCRIBBLE,
        EmbeddingCache(),
        "random-swin",
        decoder_runtime="onnxruntime",
    )
    in_torch = BoxPredictor(
        random_swin, PROMPTS_BOX_POINTS_SCRIBBLE, EmbeddingCache(), "random-swin"
    )
    box = np.array([[20, 20, 80, 70]])
    first = predictor.set_image(_image())
    predictor.predict(box)
    decoder = predictor.graph._decoder
    assert isinstance(decoder, GraphSkipDecoder)
    kept = decoder._rows
    predictor.predict(box + 3)
    assert decoder._rows is kept  # the same image: the rows are not laid out again
    second_image = np.ascontiguousarray(_image()[::-1])
    predictor.set_image(second_image)
    got = predictor.predict(box)
    assert decoder._rows is not kept and decoder._rows_of is not first.features.skip_context
    in_torch.set_encoded(predictor.current)
    _assert_same_prediction(got, in_torch.predict(box))  # the new image's rows, not the old


def test_the_skip_decoder_needs_swin_litemedsam():
    with pytest.raises(ValueError, match="skip decoder"):
        GraphSkipDecoder(build_litemedsam(), "onnxruntime")
