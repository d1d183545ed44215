"""The box-only decoder on the graph runtimes: same masks as torch, used only where it applies."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_swinlitemedsam.inference.embedding_cache import EmbeddingCache
from napari_swinlitemedsam.inference.graph_decoder import (
    GraphBoxDecoder,
    decodes_boxes_alone,
    exported_decoder_graphs,
)
from napari_swinlitemedsam.inference.onnx_encoder import open_cpu_session
from napari_swinlitemedsam.inference.predictor import BoxPredictor
from napari_swinlitemedsam.model.registry import (
    PROMPTS_BOX,
    build_litemedsam,
    build_swin_litemedsam,
)
from napari_swinlitemedsam.model.segmenter import ImageFeatures

# Another runtime computes the same float32 arithmetic in another order: logits differ by a few
# 1e-6 of their range (measured 4e-6 on the real weights); 1e-4 of the range leaves 25x for other
# CPUs' kernels and still catches a wrong graph, which is off by O(1).
LOGIT_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def random_litemedsam():
    """Seed 0, named "random" in the predictors: the model of the fast-path and runtime-choice
    tests, so that its graphs, exported into the test session's folder (see conftest), are
    exported once for all of them."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build_litemedsam().eval()


def _embedding(seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 256, 64, 64, generator=torch.Generator().manual_seed(seed))


def _assert_close_to_torch(got, expected) -> None:
    logits, iou = got
    expected_logits, expected_iou = expected
    assert logits.shape == expected_logits.shape and iou.shape == expected_iou.shape
    scale = float(expected_logits.abs().max())
    torch.testing.assert_close(logits, expected_logits, rtol=0, atol=LOGIT_TOLERANCE * scale)
    torch.testing.assert_close(iou, expected_iou, rtol=0, atol=1e-4)


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_graph_decoder_matches_torch_for_any_number_of_boxes(random_litemedsam, runtime):
    if runtime == "openvino":
        pytest.importorskip("openvino")  # the optional extra
    decoder = GraphBoxDecoder(random_litemedsam, runtime, "random")
    embedding = _embedding()
    boxes = torch.tensor(
        [[10.0, 20.0, 90.0, 120.0], [0.0, 0.0, 255.0, 255.0], [100.0, 140.0, 104.0, 141.0]]
    )
    for count in (1, 3):  # the graph's box count is dynamic
        with torch.inference_mode():
            expected = random_litemedsam.decode(ImageFeatures(embedding), boxes[:count])
        _assert_close_to_torch(decoder.decode(embedding, boxes[:count]), expected)


def test_the_image_context_is_kept_for_the_next_box_and_renewed_for_a_new_image(
    random_litemedsam, monkeypatch
):
    decoder = GraphBoxDecoder(random_litemedsam, "onnxruntime", "random")
    runs = []
    run_context = decoder._run_context
    monkeypatch.setattr(decoder, "_run_context", lambda *a: runs.append(1) or run_context(*a))
    first, second = _embedding(1), _embedding(2)
    box = torch.tensor([[30.0, 40.0, 150.0, 170.0]])
    decoder.decode(first, box)
    decoder.decode(first, box + 5)
    assert len(runs) == 1  # the second box on the same image reuses the context
    got = decoder.decode(second, box)
    assert len(runs) == 2
    with torch.inference_mode():
        expected = random_litemedsam.decode(ImageFeatures(second), box)
    _assert_close_to_torch(got, expected)  # the new image's context, not the old one


def test_the_graphs_are_exported_once_per_weights(random_litemedsam, tmp_path):
    first = exported_decoder_graphs(random_litemedsam, "random", tmp_path)
    assert len(set(first)) == 2
    stamps = [path.stat().st_mtime_ns for path in first]
    assert exported_decoder_graphs(random_litemedsam, "random", tmp_path) == first
    assert [path.stat().st_mtime_ns for path in first] == stamps  # read back, not exported again
    other = build_litemedsam().eval()  # other random weights
    assert set(exported_decoder_graphs(other, "random", tmp_path)).isdisjoint(first)


def test_onnx_runtime_threads_do_not_spin_after_a_run(random_litemedsam):
    # Spinning threads kept both cores busy after a decode, and the box's post-processing in
    # torch (or another runtime's next call) then waited for them: ~90 ms a later box instead
    # of ~70 ms on 2 cores (docs/performance.md). The setting is part of every session.
    for path in exported_decoder_graphs(random_litemedsam, "random"):
        options = open_cpu_session(path, 2).get_session_options()
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
        assert options.intra_op_num_threads == 2


def test_only_box_only_decoders_go_to_a_graph():
    swin = build_swin_litemedsam().eval()
    assert decodes_boxes_alone(build_litemedsam()) and not decodes_boxes_alone(swin)
    with pytest.raises(ValueError, match="decode in torch"):
        GraphBoxDecoder(swin, "onnxruntime")
    with pytest.raises(ValueError, match="runtime"):
        GraphBoxDecoder(build_litemedsam(), "tensorrt")


def test_predictor_decodes_boxes_on_the_graph_and_clicks_in_torch(random_litemedsam, monkeypatch):
    image = np.random.default_rng(4).integers(0, 256, size=(90, 120), dtype=np.uint8)
    in_torch = BoxPredictor(random_litemedsam, PROMPTS_BOX, EmbeddingCache(), "random")
    on_graph = BoxPredictor(
        random_litemedsam, PROMPTS_BOX, EmbeddingCache(), "random", runtime="onnxruntime"
    )
    on_graph.set_encoded(in_torch.set_image(image))  # the same features: only the decoder differs
    boxes = np.array([[10, 10, 60, 50], [30, 40, 110, 85]])

    expected, got = in_torch.predict(boxes), on_graph.predict(boxes)
    assert on_graph.graph.decoder_is_open and not in_torch.graph.decoder_is_open
    assert on_graph.describe_runtimes().endswith("; boxes decoded on onnxruntime")
    assert "boxes decoded" not in in_torch.describe_runtimes()
    scale = float(np.abs(expected.low_res_logits).max())
    np.testing.assert_allclose(
        got.low_res_logits, expected.low_res_logits, rtol=0, atol=LOGIT_TOLERANCE * scale
    )
    # masks may differ only where the logit is within the tolerance of the threshold
    near_zero = np.abs(expected.low_res_logits) <= LOGIT_TOLERANCE * scale
    assert not near_zero.all()
    flipped = got.masks != expected.masks
    assert flipped.sum() <= 0.001 * flipped.size

    # a click added to the box goes through torch (the graph takes boxes alone)
    calls = []
    real_decode = random_litemedsam.decode
    monkeypatch.setattr(
        random_litemedsam, "decode", lambda *a, **k: calls.append(1) or real_decode(*a, **k)
    )
    clicked = on_graph.predict(
        boxes[:1], points=np.array([[[20, 20]]]), point_labels=np.ones((1, 1))
    )
    assert calls and clicked.masks.shape == (1, 90, 120)
    calls.clear()
    on_graph.predict(boxes[:1])
    assert not calls  # boxes alone: the graph again


def test_the_decoder_runtime_is_set_apart_from_the_encoders(random_litemedsam):
    predictor = BoxPredictor(
        random_litemedsam,
        PROMPTS_BOX,
        EmbeddingCache(),
        "random",
        runtime="torch",
        decoder_runtime="onnxruntime",
    )
    assert (predictor.runtime, predictor.decoder_runtime) == ("torch", "onnxruntime")
    assert predictor.describe_runtimes().endswith("; boxes decoded on onnxruntime")
    image = np.random.default_rng(5).integers(0, 256, size=(64, 80), dtype=np.uint8)
    predictor.set_image(image)
    assert not predictor.graph.decoder_is_open
    predictor.predict(np.array([[5, 5, 50, 40]]))
    assert predictor.graph.decoder_is_open  # the box went to the graph, the image to torch
    with pytest.raises(ValueError, match="decoder_runtime"):
        BoxPredictor(random_litemedsam, PROMPTS_BOX, decoder_runtime="tensorrt")


def test_the_self_checks_opened_decoder_is_kept(random_litemedsam, monkeypatch):
    """The measured choice "encoder in torch, boxes on ONNX Runtime": the final predictor takes
    over the decoder session the self-check's trial predictor opened."""
    from napari_swinlitemedsam.inference import runtime_setup
    from napari_swinlitemedsam.inference.runtime_choice import Candidate, RuntimeChoice

    trials = {}

    def measured_choice(model, make, precision, runtime, choice_dir=None):
        trials["ort"] = make(Candidate("onnxruntime", "fp32"))
        trials["ort"].set_encoded(trials["ort"].encode(np.zeros((32, 32), np.uint8)))
        trials["ort"].predict(np.array([[2, 2, 20, 20]]))
        seconds = {"torch fp32": 0.1, "onnxruntime fp32": 0.06}
        return RuntimeChoice(
            "torch", "fp32", "measured", decoder="onnxruntime", box_seconds=seconds
        )

    monkeypatch.setattr(runtime_setup, "choose_runtime", measured_choice)
    predictor = runtime_setup.build_measured(
        BoxPredictor, random_litemedsam, PROMPTS_BOX, "random", EmbeddingCache()
    )
    assert (predictor.runtime, predictor.decoder_runtime) == ("torch", "onnxruntime")
    assert predictor.graph._decoder is trials["ort"].graph._decoder is not None
    assert predictor.describe_runtimes() == (
        "torch fp32 (measured); boxes decoded on onnxruntime (1.67x torch)"
    )


def test_a_forced_decoder_runtime_overrides_the_measured_one(random_litemedsam, monkeypatch):
    """``from_pretrained(..., decoder_runtime="torch")`` goes through the measured set-up: the
    forced value wins over the decision (it used to be passed twice and raise a TypeError)."""
    from napari_swinlitemedsam.inference import runtime_setup
    from napari_swinlitemedsam.inference.runtime_choice import RuntimeChoice

    def measured_choice(model, make, precision, runtime, choice_dir=None):
        return RuntimeChoice("onnxruntime", "fp32", "measured", decoder="onnxruntime")

    monkeypatch.setattr(runtime_setup, "choose_runtime", measured_choice)
    for forced, expected in (("torch", "torch"), ("auto", "onnxruntime")):
        predictor = runtime_setup.build_measured(
            BoxPredictor,
            random_litemedsam,
            PROMPTS_BOX,
            "random",
            EmbeddingCache(),
            decoder_runtime=forced,
        )
        assert (predictor.runtime, predictor.decoder_runtime) == ("onnxruntime", expected)


def test_a_half_precision_cache_keeps_the_image_context(random_litemedsam, monkeypatch):
    """Slices kept in float16 are converted for torch at every decode; the graph reads the
    stored slice itself, so the image's context is still computed once for all its boxes."""
    predictor = BoxPredictor(
        random_litemedsam,
        PROMPTS_BOX,
        EmbeddingCache(),
        "random",
        feature_dtype=torch.float16,
        decoder_runtime="onnxruntime",
    )
    image = np.random.default_rng(8).integers(0, 256, size=(64, 80), dtype=np.uint8)
    encoded = predictor.set_image(image)
    assert encoded.features.embedding.dtype == torch.float16
    predictor.predict(np.array([[5, 5, 50, 40]]))
    decoder = predictor.graph._decoder
    runs = []
    run_context = decoder._run_context
    monkeypatch.setattr(decoder, "_run_context", lambda *a: runs.append(1) or run_context(*a))
    got = predictor.predict(np.array([[10, 8, 60, 50]]))
    assert not runs  # the context of the first box is reused
    with torch.inference_mode():
        expected = random_litemedsam.decode(
            encoded.features.to("cpu", torch.float32),
            torch.as_tensor(got.boxes_256, dtype=torch.float32),
        )
    _assert_close_to_torch(
        (torch.from_numpy(got.low_res_logits)[:, None], torch.from_numpy(got.scores)[:, None]),
        expected,
    )
