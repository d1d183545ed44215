"""ONNX Runtime as an alternative encoder runtime, measured only when it is installed.

``pip install onnxruntime onnx`` (not a dependency of the package). The encoder step of a model
(``PromptableSegmenter.encode``: image encoder, plus Swin-LiteMedSAM's skip neck) is exported
with torch's TorchScript-based exporter and run on ORT's CPU provider with all graph
optimisations and as many intra-op threads as torch uses.
"""

from __future__ import annotations

import importlib.util
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from napari_swinlitemedsam.model.segmenter import PromptableSegmenter


def available() -> bool:
    return all(importlib.util.find_spec(name) for name in ("onnxruntime", "onnx"))


class _EncodeStep(torch.nn.Module):
    """``model.encode`` as a module returning plain tensors (for the exporter)."""

    def __init__(self, model: PromptableSegmenter) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor):
        features = self.model.encode(images)[0]
        if features.skip_context is None:
            return (features.embedding,)
        return features.embedding, features.skip_context.fine, features.skip_context.coarse


def export_encoder(model: PromptableSegmenter, path: Path) -> None:
    images = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_EncodeStep(model).eval(), (images,), str(path), opset_version=18,
                          dynamo=False)


def ort_encoder(model: PromptableSegmenter, images: torch.Tensor) -> tuple[Callable[[], object], float]:
    """A callable running the exported encoder on ``images`` once, and the largest absolute
    difference of its outputs from torch's float32 outputs."""
    import onnxruntime

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "encoder.onnx"
        export_encoder(model, path)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = onnxruntime.InferenceSession(str(path), options,
                                               providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: images.numpy()}
    outputs = session.run(None, feed)
    with torch.inference_mode():
        reference = _EncodeStep(model)(images)
    difference = max(float(np.abs(o - r.numpy()).max()) for o, r in zip(outputs, reference))
    return (lambda: session.run(None, feed)), difference
