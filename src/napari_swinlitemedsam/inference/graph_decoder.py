"""The box-only decoder step on the encoder's graph runtime (ONNX Runtime or OpenVINO).

A later box on an already encoded image is one decoder call. For a model whose decoder takes
the box alone (LiteMedSAM: no skip maps, no mask input, no derived points or scribble) that call
is exported once per set of weights, like the encoder step (:mod:`.onnx_encoder`), and runs on
the runtime the encoder runs on. In torch on the AVX2-only development CPU the two-way
transformer's small matrix products and the upscaler's transposed convolutions cost ~60 ms per
box; the graph runtimes fuse them (``docs/performance.md`` has the figures).

Anything else (added ± clicks, Swin-LiteMedSAM's skip decoder, a torch runtime) decodes in torch.
Outputs agree with torch's float32 ones to ~2e-6 of the logit range; the runtime self-check
(:mod:`.runtime_choice`) decodes through this path for the graph candidates, so a graph that
disagreed would not be chosen.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from napari_swinlitemedsam.inference.onnx_encoder import OPSET, cached_graph, open_cpu_session
from napari_swinlitemedsam.model.segmenter import ImageFeatures, PromptableSegmenter
from napari_swinlitemedsam.storage.atomic_files import write_atomically

GRAPH_RUNTIMES = ("onnxruntime", "openvino")


def decodes_boxes_alone(model: PromptableSegmenter) -> bool:
    """Whether ``model``'s decoder needs nothing but the embedding and the boxes."""
    return not model.uses_skips and not model.mask_input_always


class _BoxDecodeStep(torch.nn.Module):
    """``model.decode`` of N boxes on one embedding, as plain tensors (what the exporter needs)."""

    def __init__(self, model: PromptableSegmenter) -> None:
        super().__init__()
        self.model = model

    def forward(self, embedding: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.model.decode(ImageFeatures(embedding), boxes)


def export_box_decoder(model: PromptableSegmenter, path: Path) -> Path:
    """Write ``model``'s box-only decode step to ``path``: inputs ``embedding`` (1, 256, 64, 64)
    and ``boxes`` (N, 4), outputs ``logits`` (N, 1, 256, 256) and ``iou`` (N, 1)."""
    step = _BoxDecodeStep(model).eval()
    grid = model.prompt_encoder.image_embedding_size
    embedding = torch.zeros(1, model.prompt_encoder.embed_dim, *grid)
    boxes = torch.tensor([[10.0, 10.0, 60.0, 60.0], [20.0, 30.0, 90.0, 100.0]])
    batch = {0: "boxes"}

    def write(stream) -> None:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about shape checks
            torch.onnx.export(
                step,
                (embedding, boxes),
                stream,
                opset_version=OPSET,
                dynamo=False,
                input_names=["embedding", "boxes"],
                output_names=["logits", "iou"],
                dynamic_axes={"boxes": batch, "logits": batch, "iou": batch},
            )

    return write_atomically(path, write, durable=False, temp_suffix=".onnx")


def exported_decoder_graph(
    model: PromptableSegmenter, model_name: str, export_dir: Path | None = None
) -> Path:
    """The ONNX file of ``model``'s box decoder, exported first if not there yet (named like
    the encoder's, by the weights fingerprint, the opset and torch's version)."""
    return cached_graph(model, model_name, export_dir, "boxdecoder", export_box_decoder)


class GraphBoxDecoder:
    """Decodes boxes on ONNX Runtime or OpenVINO's CPU plugin, float32.

    Args:
        model: the (float32, CPU) model whose weights are exported.
        runtime: ``"onnxruntime"`` or ``"openvino"``.
        model_name: names the exported file.
        export_dir: where exported files are kept (default: the user cache folder).
        threads: inference threads (default: ``torch.get_num_threads()``).
    """

    def __init__(
        self,
        model: PromptableSegmenter,
        runtime: str,
        model_name: str = "",
        export_dir: Path | None = None,
        threads: int | None = None,
    ) -> None:
        if runtime not in GRAPH_RUNTIMES:
            raise ValueError(f"runtime must be one of {GRAPH_RUNTIMES}, got {runtime!r}")
        if not decodes_boxes_alone(model):
            raise ValueError("this model's decoder needs more than the boxes; decode in torch")
        self.path = exported_decoder_graph(model, model_name, export_dir)
        threads = int(threads or torch.get_num_threads())
        opener = _open_onnxruntime if runtime == "onnxruntime" else _open_openvino
        self._run = opener(self.path, threads)

    def decode(self, embedding: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(1, 256, 64, 64) embedding, (N, 4) boxes in the 256 frame -> (logits (N, 1, 256, 256),
        iou (N, 1)), float32 CPU tensors."""
        arrays = [
            t.detach().to("cpu", torch.float32).contiguous().numpy() for t in (embedding, boxes)
        ]
        logits, iou = self._run(*arrays)
        return torch.from_numpy(logits), torch.from_numpy(iou)


def _open_onnxruntime(path: Path, threads: int):
    session = open_cpu_session(path, threads)

    def run(embedding: np.ndarray, boxes: np.ndarray) -> list[np.ndarray]:
        return session.run(["logits", "iou"], {"embedding": embedding, "boxes": boxes})

    return run


def _open_openvino(path: Path, threads: int):
    from napari_swinlitemedsam.inference.openvino_encoder import compile_on_cpu

    request = compile_on_cpu(path, threads).create_infer_request()

    def run(embedding: np.ndarray, boxes: np.ndarray) -> list[np.ndarray]:
        request.infer([embedding, boxes])
        # copies: the request's output buffers are reused by the next inference
        return [np.array(request.get_output_tensor(i).data) for i in range(2)]

    return run
