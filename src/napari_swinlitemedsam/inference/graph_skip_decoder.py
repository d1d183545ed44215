"""Swin-LiteMedSAM's decoder step on a graph runtime (ONNX Runtime or OpenVINO).

Every Swin-LiteMedSAM box is decoded with prompts derived from it (4 points and a scribble,
drawn in :mod:`.box_prompts`) and the image's skip terms; the user's ± clicks are more points.
All of them are plain tensors, so the whole decoder step is exported once per set of weights
(:class:`~napari_swinlitemedsam.model.channels_last_skip_decoder.ChannelsLastSkipDecoder`, the
upscaler channels-last) and run on the runtime the self-check measured fastest for a later box
(:mod:`.runtime_choice`). The skip terms are laid out as rows once per image and kept for the
image's next boxes. Outputs agree with torch's float32 ones to float rounding; the self-check
compares them with torch's before choosing the graph.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from napari_swinlitemedsam.inference.graph_sessions import (
    OUTPUTS,
    export_graph,
    float_array,
    open_graph,
)
from napari_swinlitemedsam.inference.onnx_encoder import cached_graph
from napari_swinlitemedsam.model.channels_last_skip_decoder import (
    ChannelsLastSkipDecoder,
    check_skip_decoder,
    empty_skip_context,
    skip_rows,
)
from napari_swinlitemedsam.model.segmenter import ImageFeatures, PromptableSegmenter
from napari_swinlitemedsam.model.skip_mask_decoder import SkipContext

INPUTS = ("embedding", "coarse", "fine", "boxes", "points", "labels", "masks")


def export_skip_decoder(model: PromptableSegmenter, path: Path) -> Path:
    """Write ``model``'s :class:`ChannelsLastSkipDecoder` to ``path``: inputs :data:`INPUTS`
    (N boxes and P points per box dynamic), outputs ``logits`` (N, 1, 256, 256), ``iou`` (N, 1)."""
    decoder = check_skip_decoder(model)
    height, width = model.prompt_encoder.image_embedding_size
    grid = (int(height), int(width))
    size = model.image_size
    embedding = torch.zeros(1, model.prompt_encoder.embed_dim, *grid)
    coarse, fine = skip_rows(empty_skip_context(decoder, grid))
    count, points = 2, 5
    example = (
        embedding,
        coarse,
        fine,
        torch.tensor([[10.0, 10.0, 60.0, 60.0], [20.0, 30.0, 90.0, 100.0]]),
        torch.full((count, points, 2), 30.0),
        torch.ones(count, points, dtype=torch.int64),
        torch.zeros(count, 1, size, size),
    )
    batch = {0: "boxes"}
    dynamic = {name: batch for name in ("boxes", "masks", *OUTPUTS)}
    dynamic.update({"points": {0: "boxes", 1: "points"}, "labels": {0: "boxes", 1: "points"}})
    step = ChannelsLastSkipDecoder(model).eval()
    return export_graph(step, example, INPUTS, OUTPUTS, dynamic, path)


class GraphSkipDecoder:
    """Decodes Swin-LiteMedSAM prompts on ONNX Runtime or OpenVINO's CPU plugin, float32.

    Args:
        model: the (float32, CPU) Swin-LiteMedSAM whose weights are exported.
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
        check_skip_decoder(model)
        self.path = cached_graph(model, model_name, export_dir, "skipdecoder", export_skip_decoder)
        threads = int(threads or torch.get_num_threads())
        self._run = open_graph(self.path, runtime, threads, INPUTS, OUTPUTS)
        # the last skip context seen (held, so its id cannot be reused) and its rows
        self._rows_of: SkipContext | None = None
        self._rows: list[np.ndarray] = []

    def decode(
        self,
        features: ImageFeatures,
        boxes: torch.Tensor,
        points: torch.Tensor,
        labels: torch.Tensor,
        masks: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        """One image's features, (N, 4) boxes, (N, P, 2) points, (N, P) labels and
        (N, 1, 256, 256) scribbles in the 256 frame -> (logits (N, 1, 256, 256), iou (N, 1)),
        float32 CPU tensors."""
        context = features.skip_context
        if context is None:
            raise ValueError("Swin-LiteMedSAM's decoder needs the image's skip maps")
        if context is not self._rows_of:
            self._rows = [float_array(rows) for rows in skip_rows(context)]
            self._rows_of = context
        logits, iou = self._run(
            float_array(features.embedding),
            *self._rows,
            float_array(boxes),
            float_array(points),
            labels.detach().to("cpu", torch.int64).contiguous().numpy(),
            float_array(masks),
        )
        return torch.from_numpy(logits), torch.from_numpy(iou)
