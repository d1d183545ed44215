"""The encoder and box-decoder steps a predictor runs on a graph runtime, opened on first use.

A :class:`~.predictor.BoxPredictor` runs each step in torch or on a graph runtime (ONNX Runtime
or OpenVINO's CPU plugin, float32): the encoder on ``encoder_runtime``; on ``decoder_runtime``
a LiteMedSAM box without clicks (:mod:`.graph_decoder`) and every Swin-LiteMedSAM decode
(:mod:`.graph_skip_decoder`). The two runtimes are chosen apart by the self-check
(:mod:`.runtime_choice`): on some CPUs OpenVINO encodes fastest and ONNX Runtime decodes a box
fastest. The exported graphs are opened when first needed and can be taken over from another
predictor of the same model (the self-check's trial predictors), so nothing is opened twice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from napari_swinlitemedsam.inference.graph_decoder import GraphBoxDecoder, decodes_boxes_alone
from napari_swinlitemedsam.inference.graph_sessions import GRAPH_RUNTIMES
from napari_swinlitemedsam.inference.graph_skip_decoder import GraphSkipDecoder
from napari_swinlitemedsam.inference.onnx_encoder import RUNTIMES, OnnxEncoder
from napari_swinlitemedsam.inference.parallel_encodes import stream_count
from napari_swinlitemedsam.model.segmenter import ImageFeatures, PromptableSegmenter

if TYPE_CHECKING:  # imported when first used: OpenVINO is an optional extra
    from napari_swinlitemedsam.inference.openvino_encoder import OpenVinoEncoder

DECODER_RUNTIMES = ("torch", *GRAPH_RUNTIMES)


def has_graph_decoder(model: PromptableSegmenter) -> bool:
    """Whether ``model``'s boxes can be decoded on a graph runtime: LiteMedSAM's box-only
    decoder (boxes without clicks), Swin-LiteMedSAM's skip decoder (every box)."""
    return decodes_boxes_alone(model) or model.uses_skips


class GraphSteps:
    """The graph-runtime sessions of one predictor.

    Args:
        model: the float32 model whose weights are exported.
        model_name: names the exported files.
        encoder_runtime: one of ``RUNTIMES`` (``"torch"``: the encoder is not run here).
        decoder_runtime: one of ``DECODER_RUNTIMES`` (``"torch"``: every box in torch).
    """

    def __init__(
        self,
        model: PromptableSegmenter,
        model_name: str,
        encoder_runtime: str,
        decoder_runtime: str,
    ) -> None:
        if encoder_runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}, got {encoder_runtime!r}")
        if decoder_runtime not in DECODER_RUNTIMES:
            raise ValueError(
                f"decoder_runtime must be 'auto' or one of {DECODER_RUNTIMES}, "
                f"got {decoder_runtime!r}"
            )
        self.model = model
        self.model_name = model_name
        self.encoder_runtime = encoder_runtime
        self.decoder_runtime = decoder_runtime
        self._encoder: OnnxEncoder | OpenVinoEncoder | None = None  # opened on first encode
        self._decoder: GraphBoxDecoder | GraphSkipDecoder | None = None

    @property
    def encodes(self) -> bool:
        """Whether the encoder step runs on a graph runtime."""
        return self.encoder_runtime in GRAPH_RUNTIMES

    @property
    def decoder_is_open(self) -> bool:
        return self._decoder is not None

    def encode(self, tensor: torch.Tensor) -> list[ImageFeatures]:
        """(B, 3, 256, 256) model input -> B ImageFeatures on the model's device (the graphs
        take one image at a time; several are encoded side by side, :mod:`.parallel_encodes`)."""
        encoder = self._encoder if self._encoder is not None else self.open_encoder()
        return [features.to(self.model.device) for features in encoder.encode_many(tensor)]

    @property
    def slices_per_encode(self) -> int:
        """Slices worth encoding in one call: the graph encoder's streams (torch: 1; its
        batched encodes were no faster per slice on 2 cores, docs/performance.md)."""
        if not self.encodes:
            return 1
        return stream_count(torch.get_num_threads())

    def open_encoder(self) -> OnnxEncoder | OpenVinoEncoder:
        """Export (once per weights) and open the encoder's graph."""
        if self.encoder_runtime == "openvino":
            from napari_swinlitemedsam.inference.openvino_encoder import OpenVinoEncoder

            self._encoder = OpenVinoEncoder(self.model, self.model_name)
        else:
            self._encoder = OnnxEncoder(self.model, self.model_name)
        return self._encoder

    def open_decoder(self) -> GraphBoxDecoder | GraphSkipDecoder:
        """Export (once per weights) and open the decoder's graphs."""
        opener = GraphSkipDecoder if self.model.uses_skips else GraphBoxDecoder
        self._decoder = opener(self.model, self.decoder_runtime, self.model_name)
        return self._decoder

    def openings(self) -> list[Callable[[], object]]:
        """The one-time work still to do before this predictor's graphs run (export, compile,
        open), one call per graph: the self-check runs each as a step of its own."""
        pending: list[Callable[[], object]] = []
        if self.encodes and self._encoder is None:
            pending.append(self.open_encoder)
        graph_decoder = self.decoder_runtime in GRAPH_RUNTIMES and has_graph_decoder(self.model)
        if graph_decoder and self._decoder is None:
            pending.append(self.open_decoder)
        return pending

    def decodes(self, points, scribbles) -> bool:
        """Whether a decode with these prompts goes to the graph: Swin-LiteMedSAM's always
        (its derived points, scribble and the user's clicks are graph inputs); a box-only
        model's when it has boxes alone (clicks are decoded in torch)."""
        if self.decoder_runtime not in GRAPH_RUNTIMES:
            return False
        if self.model.uses_skips:
            return True
        return points is None and scribbles is None and has_graph_decoder(self.model)

    def decode(
        self,
        features: ImageFeatures,
        boxes: torch.Tensor,
        points: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        scribbles: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, ...]:
        """One image's features and (N, 4) boxes in the 256 frame (with, for
        Swin-LiteMedSAM, (N, P, 2) points, (N, P) labels, (N, 1, 256, 256) scribbles) ->
        (logits (N, 1, 256, 256), iou (N, 1)) on the decoder runtime."""
        decoder = self._decoder if self._decoder is not None else self.open_decoder()
        if isinstance(decoder, GraphBoxDecoder):
            return decoder.decode(features.embedding, boxes)
        if points is None or labels is None or scribbles is None:
            raise ValueError("Swin-LiteMedSAM decodes a box with its points and scribble")
        return decoder.decode(features, boxes, points, labels, scribbles)

    def adopt(self, encoder_from: GraphSteps | None, decoder_from: GraphSteps | None) -> None:
        """Take over the opened encoder of ``encoder_from`` and the opened decoder of
        ``decoder_from`` (same model; each only where it runs on the same runtime)."""
        if encoder_from is not None and encoder_from.encoder_runtime == self.encoder_runtime:
            self._encoder = encoder_from._encoder
        if decoder_from is not None and decoder_from.decoder_runtime == self.decoder_runtime:
            self._decoder = decoder_from._decoder
