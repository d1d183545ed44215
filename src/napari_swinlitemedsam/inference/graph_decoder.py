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

from pathlib import Path

import numpy as np
import torch

from napari_swinlitemedsam.inference.graph_sessions import (
    GRAPH_RUNTIMES,
    OUTPUTS,
    export_graph,
    float_array,
    open_graph,
)
from napari_swinlitemedsam.inference.onnx_encoder import cached_graph
from napari_swinlitemedsam.model.cached_box_decoder import BoxDecoderContext, CachedBoxDecoder
from napari_swinlitemedsam.model.segmenter import PromptableSegmenter


def decodes_boxes_alone(model: PromptableSegmenter) -> bool:
    """Whether ``model``'s decoder needs nothing but the embedding and the boxes."""
    return not model.uses_skips and not model.mask_input_always


CONTEXT_NAMES = ("image", "keys", "values", "queries")


def export_box_context(model: PromptableSegmenter, path: Path) -> Path:
    """Write :class:`BoxDecoderContext` of ``model`` to ``path``: input ``embedding``
    (1, 256, 64, 64), outputs :data:`CONTEXT_NAMES`."""
    step = BoxDecoderContext(model).eval()
    embedding = torch.zeros(1, model.prompt_encoder.embed_dim, *_grid(model))
    return export_graph(step, (embedding,), ["embedding"], list(CONTEXT_NAMES), {}, path)


def export_box_decoder(model: PromptableSegmenter, path: Path) -> Path:
    """Write :class:`CachedBoxDecoder` of ``model`` to ``path``: inputs :data:`CONTEXT_NAMES`
    and ``boxes`` (N, 4), outputs ``logits`` (N, 1, 256, 256) and ``iou`` (N, 1)."""
    step = CachedBoxDecoder(model).eval()
    embedding = torch.zeros(1, model.prompt_encoder.embed_dim, *_grid(model))
    with torch.no_grad():
        context = BoxDecoderContext(model).eval()(embedding)
    boxes = torch.tensor([[10.0, 10.0, 60.0, 60.0], [20.0, 30.0, 90.0, 100.0]])
    batch = {0: "boxes"}
    return export_graph(
        step,
        (*context, boxes),
        [*CONTEXT_NAMES, "boxes"],
        ["logits", "iou"],
        {"boxes": batch, "logits": batch, "iou": batch},
        path,
    )


def _grid(model: PromptableSegmenter) -> tuple[int, int]:
    return tuple(model.prompt_encoder.image_embedding_size)  # type: ignore[return-value]


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
        self._run_context = open_graph(
            self.context_path, runtime, threads, ["embedding"], CONTEXT_NAMES
        )
        self._run = open_graph(self.path, runtime, threads, [*CONTEXT_NAMES, "boxes"], OUTPUTS)
        # the last embedding seen (held, so it cannot be freed and its id reused) and its context
        self._context_of: torch.Tensor | None = None
        self._context: list[np.ndarray] = []

    def decode(self, embedding: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(1, 256, 64, 64) embedding, (N, 4) boxes in the 256 frame -> (logits (N, 1, 256, 256),
        iou (N, 1)), float32 CPU tensors."""
        if embedding is not self._context_of:
            self._context = self._run_context(float_array(embedding))
            self._context_of = embedding
        logits, iou = self._run(*self._context, float_array(boxes))
        return torch.from_numpy(logits), torch.from_numpy(iou)
