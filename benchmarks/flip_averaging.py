"""Flip test-time augmentation, a candidate measured by ``simulated_annotator.py``.

Every slice is encoded twice (as is and mirrored left-right); every box is decoded on both,
the mirrored logits are mirrored back at the original size and the two are averaged before the
``sigmoid > 0.5`` threshold. It costs twice the encodes and twice the decodes, which is why it
lives here until it earns its place in the pipeline (``docs/pipeline.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_swinlitemedsam.inference import transforms
from napari_swinlitemedsam.inference.embedding_cache import EncodedSlice
from napari_swinlitemedsam.inference.predictor import BoxPredictor, Prediction


@dataclass(frozen=True)
class FlippedPair:
    """One slice encoded as is and mirrored left-right (the ``original_size`` of both)."""

    plain: EncodedSlice
    mirrored: EncodedSlice

    @property
    def original_size(self) -> tuple[int, int]:
        return self.plain.original_size


class FlipAveragedPredictor:
    """``encode`` / ``predict_256`` of a :class:`BoxPredictor`, averaged over a left-right flip."""

    def __init__(self, predictor: BoxPredictor) -> None:
        self.predictor = predictor
        # one pair per slice key, so a caller that memoises decodes by slice sees the same
        # object again (a benchmark run holds a few hundred slices at most)
        self._pairs: dict = {}

    def encode(self, image: np.ndarray, key=None) -> FlippedPair:
        """Both encodings of an (H, W) slice (each cached by the predictor under ``key``)."""
        if key is not None and key in self._pairs:
            return self._pairs[key]
        mirrored_key = None if key is None else ("mirrored", key)
        pair = FlippedPair(
            self.predictor.encode(image, key=key),
            self.predictor.encode(np.ascontiguousarray(image[:, ::-1]), key=mirrored_key),
        )
        if key is not None:
            self._pairs[key] = pair
        return pair

    def predict_256(self, boxes_256, encoded: FlippedPair, slice_index: int = 0) -> Prediction:
        """(N, 4) xyxy boxes in the 256 frame -> masks (N, H, W) from the averaged logits."""
        boxes = np.asarray(boxes_256, dtype=np.float64).reshape(-1, 4)
        height, width = encoded.original_size
        # original column c sits at c * scale in the frame; its mirror image at (W - 1 - c) * scale
        far_edge = (width - 1) * transforms.frame_scale(encoded.original_size)
        mirrored_boxes = boxes.copy()
        mirrored_boxes[:, 0] = np.clip(far_edge - boxes[:, 2], 0, 256)
        mirrored_boxes[:, 2] = np.clip(far_edge - boxes[:, 0], 0, 256)
        plain = self.predictor.predict_256(boxes, encoded.plain, slice_index)
        mirrored = self.predictor.predict_256(mirrored_boxes, encoded.mirrored, slice_index)
        new_size = encoded.plain.new_size
        logits = transforms.logits_to_original(plain.low_res_logits, new_size, (height, width))
        back = transforms.logits_to_original(mirrored.low_res_logits, new_size, (height, width))
        averaged = (logits + back[..., ::-1]) / 2
        return Prediction(
            masks=averaged > 0,
            scores=(plain.scores + mirrored.scores) / 2,
            low_res_logits=plain.low_res_logits,
            boxes_256=boxes,
        )
