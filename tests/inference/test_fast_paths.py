"""The inference fast paths: precision options of the predictor and the Swin attention memo."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_swinlitemedsam.inference.disk_cache import weights_fingerprint
from napari_swinlitemedsam.inference.embedding_cache import EmbeddingCache
from napari_swinlitemedsam.inference.onnx_encoder import (
    EXPORT_DIR_ENV,
    GRAPH_VERSION,
    cached_graph,
    onnx_available,
    torch_version,
)
from napari_swinlitemedsam.inference.precision import (
    check_feature_dtype,
    check_precision,
    native_bf16_cpu,
    stored_features,
)
from napari_swinlitemedsam.inference.predictor import BoxPredictor
from napari_swinlitemedsam.model.registry import PROMPTS_BOX, build_litemedsam
from napari_swinlitemedsam.model.segmenter import ImageFeatures
from napari_swinlitemedsam.model.skip_mask_decoder import SkipContext
from napari_swinlitemedsam.model.swin_encoder import WindowAttention
from stub_segmenter import CountingSegmenter


def _features(scale: float = 1.0, dtype=torch.float32) -> ImageFeatures:
    generator = torch.Generator().manual_seed(0)
    return ImageFeatures(
        torch.randn(1, 256, 64, 64, generator=generator).to(dtype) * scale,
        SkipContext(
            torch.randn(1, 128, 128, 128, generator=generator).to(dtype),
            torch.randn(1, 256, 64, 64, generator=generator).to(dtype),
        ),
    )


def test_unknown_precision_and_feature_dtype_are_refused():
    assert check_precision("bf16") == "bf16" and check_precision("fp16") == "fp16"
    with pytest.raises(ValueError, match="fp32"):
        check_precision("int8")
    with pytest.raises(ValueError, match="float16"):
        check_feature_dtype(torch.int8)


def test_stored_features_halve_memory_in_float16_and_keep_values():
    features = _features()
    stored = stored_features(features, torch.float16)
    sizes = [
        sum(t.numel() * t.element_size() for t in f.tensors().values()) for f in (features, stored)
    ]
    assert sizes[1] * 2 == sizes[0]
    assert all(t.dtype == torch.float16 for t in stored.tensors().values())
    torch.testing.assert_close(stored.embedding.float(), features.embedding, atol=2e-3, rtol=1e-3)
    assert stored_features(features, None) is features  # float32 in, float32 kept


def test_stored_features_stay_float32_where_float16_would_overflow():
    stored = stored_features(_features(scale=1e6), torch.float16)
    assert all(t.dtype == torch.float32 for t in stored.tensors().values())


def test_mixed_autocast_outputs_are_cached_as_float32():
    features = _features()
    mixed = ImageFeatures(features.embedding.to(torch.bfloat16), features.skip_context)
    stored = stored_features(mixed, None)
    assert all(t.dtype == torch.float32 for t in stored.tensors().values())


def test_native_bf16_flag_reads_cpu_flags(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16\n")
    assert native_bf16_cpu(info) is True
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2\n")
    assert native_bf16_cpu(info) is False
    # Without /proc/cpuinfo PyTorch's detection decides: see test_runtime_choice.py


@pytest.fixture(scope="module")
def random_litemedsam():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build_litemedsam().eval()


@pytest.mark.slow
def test_predictor_precision_options_give_close_masks(random_litemedsam):
    """fp32 against float16-stored features on the real architecture (random weights).

    bf16 on real weights is checked where it is used: the benchmark smoke run (tests/benchmarks,
    slow tier) checks its agreement for both models on CPUs with native bfloat16 (the only
    ones where ``precision="auto"`` picks it); where it is emulated one encode costs ~20 fp32
    encodes, so here only its plumbing is checked (next test).
    """
    image = np.random.default_rng(0).integers(0, 256, size=(96, 128), dtype=np.uint8)
    boxes = np.array([[10, 10, 60, 50], [40, 30, 120, 90]])
    results = {}
    for label, options in {"fp32": {}, "fp16 store": {"feature_dtype": torch.float16}}.items():
        predictor = BoxPredictor(random_litemedsam, PROMPTS_BOX, EmbeddingCache(), **options)
        encoded = predictor.set_image(image)
        expected = torch.float16 if label == "fp16 store" else torch.float32
        assert encoded.features.embedding.dtype == expected
        results[label] = predictor.predict(boxes)
    assert results["fp16 store"].masks.shape == (2, 96, 128)
    agree = (results["fp16 store"].masks == results["fp32"].masks).mean()
    assert agree > 0.95, agree
    np.testing.assert_allclose(
        results["fp16 store"].low_res_logits, results["fp32"].low_res_logits, atol=0.05
    )
    with pytest.raises(ValueError):
        BoxPredictor(random_litemedsam, PROMPTS_BOX, precision="int8")


class _AutocastRecorder(CountingSegmenter):
    """The stand-in model, noting whether each encode ran under bfloat16 autocast."""

    def __init__(self) -> None:
        super().__init__()
        self.autocast_seen: list[bool] = []

    def encode(self, images):
        self.autocast_seen.append(
            torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
        )
        return super().encode(images)


def test_bf16_precision_runs_the_encoder_under_bfloat16_autocast_and_caches_float32():
    image = np.random.default_rng(0).integers(0, 256, size=(96, 128), dtype=np.uint8)
    model = _AutocastRecorder()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the emulated-bf16 warning has its own test
        bf16 = BoxPredictor(model, PROMPTS_BOX, EmbeddingCache(), precision="bf16")
    encoded = bf16.set_image(image)
    BoxPredictor(model, PROMPTS_BOX, EmbeddingCache()).set_image(image)
    assert model.autocast_seen == [True, False]
    assert encoded.features.embedding.dtype == torch.float32
    assert "precision=bf16" in bf16.encoder_identity  # its features never mix with fp32's


def _attention(shifted: bool) -> WindowAttention:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return WindowAttention(dim=32, heads=2, head_dim=16, window_size=8, shifted=shifted).eval()


@pytest.mark.parametrize("shifted", [False, True])
def test_attention_memo_follows_new_weights(shifted):
    module = _attention(shifted)
    x = torch.randn(2, 16, 24, 32, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        before = module(x)
    state = {k: v.clone() for k, v in module.state_dict().items()}
    state["pos_embedding"] = state["pos_embedding"] + 1.0
    module.load_state_dict(state)
    fresh = _attention(shifted)
    fresh.load_state_dict(state)
    with torch.inference_mode():
        after = module(x)
        expected = fresh(x)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, expected, atol=0, rtol=0)


def test_attention_with_autograd_does_not_memo_and_has_gradients():
    module = _attention(shifted=True)
    x = torch.randn(1, 16, 16, 32, generator=torch.Generator().manual_seed(2))
    module(x).sum().backward()
    assert module._memo == {}
    assert module.pos_embedding.grad is not None and module.pos_embedding.grad.abs().sum() > 0


@pytest.mark.slow
@pytest.mark.skipif(not onnx_available(), reason="onnxruntime and onnx are optional")
def test_onnxruntime_encoder_matches_torch(random_litemedsam):
    # The graph goes to the test session's export folder (see conftest): the runtime-choice and
    # graph-decoder tests use the same seed-0 model under the same name and reuse its export.
    image = np.random.default_rng(1).integers(0, 256, size=(80, 100), dtype=np.uint8)
    boxes = np.array([[10, 10, 60, 50]])
    torch_run = BoxPredictor(random_litemedsam, PROMPTS_BOX, EmbeddingCache(), "random")
    ort_run = BoxPredictor(
        random_litemedsam, PROMPTS_BOX, EmbeddingCache(), "random", runtime="onnxruntime"
    )
    expected = torch_run.set_image(image).features.embedding
    got = ort_run.set_image(image).features.embedding
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    folder = Path(os.environ[EXPORT_DIR_ENV])
    assert list(folder.glob("random-*.onnx"))  # exported into the configured folder
    np.testing.assert_allclose(
        ort_run.predict(boxes).low_res_logits, torch_run.predict(boxes).low_res_logits, atol=1e-3
    )
    with pytest.raises(ValueError, match="float32"):
        BoxPredictor(random_litemedsam, PROMPTS_BOX, runtime="onnxruntime", precision="bf16")


@pytest.mark.slow
def test_openvino_encoder_matches_torch(random_litemedsam):
    pytest.importorskip("openvino")  # the optional extra
    image = np.random.default_rng(2).integers(0, 256, size=(80, 100), dtype=np.uint8)
    boxes = np.array([[10, 10, 60, 50]])
    torch_run = BoxPredictor(random_litemedsam, PROMPTS_BOX, EmbeddingCache(), "random")
    ov_run = BoxPredictor(
        random_litemedsam, PROMPTS_BOX, EmbeddingCache(), "random", runtime="openvino"
    )
    expected = torch_run.set_image(image).features.embedding
    got = ov_run.set_image(image).features.embedding
    # Same graph, another runtime: float32 rounding only (the ONNX Runtime test's bound).
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(
        ov_run.predict(boxes).low_res_logits, torch_run.predict(boxes).low_res_logits, atol=1e-3
    )


def test_unknown_runtime_is_refused(random_litemedsam):
    with pytest.raises(ValueError, match="runtime"):
        BoxPredictor(random_litemedsam, PROMPTS_BOX, runtime="tensorrt")


def test_a_new_export_removes_the_outdated_graphs_of_the_same_weights_only(tmp_path):
    model = build_litemedsam().eval()
    weights = f"random-{weights_fingerprint(model)}"
    now, torch_now = f"g{GRAPH_VERSION}-opset18", f"torch{torch_version()}"
    outdated = [
        f"{weights}-g{GRAPH_VERSION - 1}-opset18-{torch_now}.onnx",  # an older graph version
        f"{weights}-{now}-boxdecoder-{torch_now}.onnx",  # a part no longer exported
    ]
    kept = [
        f"{weights}-{now}-boxcontext-{torch_now}.onnx",  # another current part
        f"{weights}-{now}-torch2.9.1.onnx",  # another environment's torch
        f"other-{weights_fingerprint(model)}-g1-opset18-{torch_now}.onnx",  # other weights
        f"{weights}-g1-notes.txt",
    ]
    for name in outdated + kept:
        (tmp_path / name).write_bytes(b"graph")
    exports = []

    def export(model, path):
        exports.append(path)
        path.write_bytes(b"new graph")
        return path

    path = cached_graph(model, "random", tmp_path, "", export)
    assert exports == [path] and path.name == f"{weights}-{now}-{torch_now}.onnx"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*kept, path.name])
    (tmp_path / outdated[0]).write_bytes(b"graph")  # nothing is exported: nothing is removed
    assert cached_graph(model, "random", tmp_path, "", export) == path and len(exports) == 1
    assert (tmp_path / outdated[0]).exists()
