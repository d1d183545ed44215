"""The box-only decoder step on the encoder's graph runtime (ONNX Runtime or OpenVINO).

A later box on an already encoded image is one decoder call. For a model whose decoder takes
the box alone (LiteMedSAM: no skip maps, no mask input, no derived points or scribble) that call
runs as two graphs exported once per set of weights, like the encoder step
(:mod:`.onnx_encoder`): the image's share of the decoder, once per image, and the boxes' decoding
from it (:mod:`napari_swinlitemedsam.model.cached_box_decoder`). In torch on the AVX2-only
development CPU ``model.decode`` costs ~60 ms per box; the whole decode exported as one graph
~63 ms on ONNX Runtime; the two graphs ~45 ms a later box (``docs/performance.md``).

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
from napari_swinlitemedsam.model.cached_box_decoder import BoxDecoderContext, CachedBoxDecoder
from napari_swinlitemedsam.model.segmenter import PromptableSegmenter
from napari_swinlitemedsam.storage.atomic_files import write_atomically

GRAPH_RUNTIMES = ("onnxruntime", "openvino")


def decodes_boxes_alone(model: PromptableSegmenter) -> bool:
    """Whether ``model``'s decoder needs nothing but the embedding and the boxes."""
    return not model.uses_skips and not model.mask_input_always


CONTEXT_NAMES = ("image", "keys", "values", "queries")


def export_box_context(model: PromptableSegmenter, path: Path) -> Path:
    """Write :class:`BoxDecoderContext` of ``model`` to ``path``: input ``embedding``
    (1, 256, 64, 64), outputs :data:`CONTEXT_NAMES`."""
    step = BoxDecoderContext(model).eval()
    embedding = torch.zeros(1, model.prompt_encoder.embed_dim, *_grid(model))
    return _export(step, (embedding,), ["embedding"], list(CONTEXT_NAMES), {}, path)


def export_box_decoder(model: PromptableSegmenter, path: Path) -> Path:
    """Write :class:`CachedBoxDecoder` of ``model`` to ``path``: inputs :data:`CONTEXT_NAMES`
    and ``boxes`` (N, 4), outputs ``logits`` (N, 1, 256, 256) and ``iou`` (N, 1)."""
    step = CachedBoxDecoder(model).eval()
    embedding = torch.zeros(1, model.prompt_encoder.embed_dim, *_grid(model))
    with torch.no_grad():
        context = BoxDecoderContext(model).eval()(embedding)
    boxes = torch.tensor([[10.0, 10.0, 60.0, 60.0], [20.0, 30.0, 90.0, 100.0]])
    batch = {0: "boxes"}
    return _export(
        step,
        (*context, boxes),
        [*CONTEXT_NAMES, "boxes"],
        ["logits", "iou"],
        {"boxes": batch, "logits": batch, "iou": batch},
        path,
    )


def _grid(model: PromptableSegmenter) -> tuple[int, int]:
    return tuple(model.prompt_encoder.image_embedding_size)  # type: ignore[return-value]


def _export(step, example, input_names, output_names, dynamic_axes, path: Path) -> Path:
    def write(stream) -> None:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about shape checks
            torch.onnx.export(
                step,
                example,
                stream,
                opset_version=OPSET,
                dynamo=False,
                input_names=input_names,
                output_names=output_names,
                dynamic_axes=dynamic_axes or None,
            )

    return write_atomically(path, write, durable=False, temp_suffix=".onnx")


def exported_decoder_graphs(
    model: PromptableSegmenter, model_name: str, export_dir: Path | None = None
) -> tuple[Path, Path]:
    """The ONNX files of ``model``'s box-decoder context and box decoder, exported first if not
    there yet (named like the encoder's, by the weights fingerprint, the opset and torch's
    version)."""
    return (
        cached_graph(model, model_name, export_dir, "boxcontext", export_box_context),
        cached_graph(model, model_name, export_dir, "boxoncontext", export_box_decoder),
    )


class GraphBoxDecoder:
    """Decodes boxes on ONNX Runtime or OpenVINO's CPU plugin, float32.

    Two graphs: the image's share of the decoder (:class:`BoxDecoderContext`), computed for
    the first box on an embedding and kept for the next ones, and the boxes' decoding from it
    (:class:`CachedBoxDecoder`).

    Args:
        model: the (float32, CPU) model whose weights are exported.
        runtime: ``"onnxruntime"`` or ``"openvino"``.
        model_name: names the exported files.
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
        self.context_path, self.path = exported_decoder_graphs(model, model_name, export_dir)
        threads = int(threads or torch.get_num_threads())
        opener = _open_onnxruntime if runtime == "onnxruntime" else _open_openvino
        self._run_context = opener(self.context_path, threads, ["embedding"], CONTEXT_NAMES)
        self._run = opener(self.path, threads, [*CONTEXT_NAMES, "boxes"], ("logits", "iou"))
        # the last embedding seen (held, so it cannot be freed and its id reused) and its context
        self._context_of: torch.Tensor | None = None
        self._context: list[np.ndarray] = []

    def decode(self, embedding: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(1, 256, 64, 64) embedding, (N, 4) boxes in the 256 frame -> (logits (N, 1, 256, 256),
        iou (N, 1)), float32 CPU tensors."""
        if embedding is not self._context_of:
            self._context = self._run_context(_as_array(embedding))
            self._context_of = embedding
        logits, iou = self._run(*self._context, _as_array(boxes))
        return torch.from_numpy(logits), torch.from_numpy(iou)


def _as_array(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().to("cpu", torch.float32).contiguous().numpy()


def _open_onnxruntime(path: Path, threads: int, inputs, outputs):
    session = open_cpu_session(path, threads)

    def run(*arrays: np.ndarray) -> list[np.ndarray]:
        return session.run(list(outputs), dict(zip(inputs, arrays)))

    return run


def _open_openvino(path: Path, threads: int, inputs, outputs):
    from napari_swinlitemedsam.inference.openvino_encoder import compile_on_cpu

    request = compile_on_cpu(path, threads).create_infer_request()

    def run(*arrays: np.ndarray) -> list[np.ndarray]:
        request.infer(list(arrays))
        # copies: the request's output buffers are reused by the next inference
        return [np.array(request.get_output_tensor(i).data) for i in range(len(outputs))]

    return run
