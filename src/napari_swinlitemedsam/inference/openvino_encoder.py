"""The OpenVINO backend for the encoder step (``BoxPredictor(runtime="openvino")``).

Optional (``pip install napari-swinlitemedsam[openvino]``: the ``openvino`` wheel, about 180 MB
installed, 59 MB to download). It compiles the same ONNX graph :mod:`.onnx_encoder` exports from
our own modules (one file per weights fingerprint) for OpenVINO's CPU plugin, in float32 (its
default on CPUs with native bf16 would be bf16, which is the separate ``precision`` choice
here) with torch's thread count. ``runtime="auto"`` uses it where the self-check of
:mod:`.runtime_choice` finds it the fastest with equal masks: on the AVX2-only development CPU
it ran LiteMedSAM's encoder 2.8x faster than torch fp32 and 1.3x faster than ONNX Runtime, its
outputs within 2e-6 of the range of torch's (``benchmarks/bench_openvino.py``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from napari_swinlitemedsam.inference.onnx_encoder import (
    exported_graph,
    features_from_graph_outputs,
    graph_inputs,
)
from napari_swinlitemedsam.inference.parallel_encodes import OpenVinoStreams, stream_count
from napari_swinlitemedsam.model.segmenter import ImageFeatures, PromptableSegmenter


class OpenVinoMissing(ImportError):
    """openvino (or onnx, for the export) is not installed."""


def openvino_available() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ("openvino", "onnx"))


def check_openvino() -> None:
    if not openvino_available():
        raise OpenVinoMissing(
            "runtime='openvino' needs the packages openvino and onnx: "
            "pip install 'napari-swinlitemedsam[openvino]' (or use runtime='torch')"
        )


class OpenVinoEncoder:
    """Runs a model's encoder step on OpenVINO's CPU plugin.

    Args:
        model: the (float32, CPU) model whose weights are exported.
        model_name: names the exported file.
        export_dir: where exported files are kept (default: the user cache folder).
        threads: inference threads (default: ``torch.get_num_threads()``).
    """

    def __init__(
        self,
        model: PromptableSegmenter,
        model_name: str = "",
        export_dir: Path | None = None,
        threads: int | None = None,
    ) -> None:
        check_openvino()
        self.path = exported_graph(model, model_name, export_dir)
        self.threads = threads or torch.get_num_threads()
        compiled = compile_on_cpu(self.path, self.threads)
        self._outputs = len(compiled.outputs)
        self._request = compiled.create_infer_request()
        self._streams: OpenVinoStreams | None = None  # compiled for the first several-slice call

    @property
    def streams(self) -> int:
        """Slices :meth:`encode_many` encodes side by side."""
        return stream_count(self.threads)

    def encode(self, image: torch.Tensor) -> ImageFeatures:
        """(1, 3, 256, 256) float32 in [0, 1] -> :class:`ImageFeatures` (CPU tensors)."""
        if image.ndim != 4 or image.shape[0] != 1:
            raise ValueError(
                f"the OpenVINO encoder takes one (1, 3, 256, 256) image, got {tuple(image.shape)}"
            )
        array = image.detach().to("cpu", torch.float32).contiguous().numpy()
        self._request.infer([array])
        # Copies: the request's output buffers are reused by the next inference.
        outputs = [
            torch.from_numpy(np.array(self._request.get_output_tensor(i).data))
            for i in range(self._outputs)
        ]
        return features_from_graph_outputs(outputs)

    def encode_many(self, images: torch.Tensor) -> list[ImageFeatures]:
        """(B, 3, 256, 256) -> B :class:`ImageFeatures`: :attr:`streams` slices side by side
        (OpenVINO streams, :mod:`.parallel_encodes`); one slice as :meth:`encode`."""
        if len(images) < 2 or self.streams < 2:
            return [self.encode(image[None]) for image in images]
        if self._streams is None:  # a second compile, once: ~1 s
            self._streams = OpenVinoStreams(self.path, self.threads, self.streams)
        outputs = self._streams.run(graph_inputs(images))
        return [features_from_graph_outputs([torch.from_numpy(o) for o in one]) for one in outputs]


def compile_on_cpu(path: Path, threads: int):
    """``path`` compiled for OpenVINO's CPU plugin: float32, ``threads``, latency first."""
    import openvino

    return openvino.Core().compile_model(
        str(path),
        "CPU",
        {
            "INFERENCE_NUM_THREADS": int(threads),
            "INFERENCE_PRECISION_HINT": "f32",
            "PERFORMANCE_HINT": "LATENCY",
        },
    )
