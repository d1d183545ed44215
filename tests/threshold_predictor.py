"""A stand-in predictor whose masks mean something: the bright pixels inside the box.

It has the two methods the 3D propagation uses (``encode``, ``predict_256``), takes (H, W)
uint8 slices of at most 256 pixels a side (so the 256 frame is the original frame) and answers
instantly. Bright = above 127. ``scores`` (the decoder's IoU prediction) is the fraction of
the box that is bright, so a box around nothing scores 0.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np

from napari_swinlitemedsam.inference.predictor import Prediction


@dataclass(frozen=True)
class ThresholdSlice:
    image: np.ndarray
    original_size: tuple[int, int]

    @property
    def new_size(self) -> tuple[int, int]:
        """The slice fills the 256 frame's unpadded part as it is (at most 256 a side)."""
        return self.original_size

    @property
    def image_256(self) -> np.ndarray:
        """(1, 256, 256) float32: the slice zero-padded to the frame, like the model's input."""
        frame = np.zeros((1, 256, 256), dtype=np.float32)
        height, width = self.original_size
        frame[0, :height, :width] = self.image
        return frame


class ThresholdPredictor:
    """Masks = pixels > 127 inside each box; counts encodes and decodes."""

    def __init__(self) -> None:
        self.encodes = 0
        self.decodes = 0

    def encode(self, image: np.ndarray, key: Hashable | None = None) -> ThresholdSlice:
        image = np.asarray(image)
        assert max(image.shape) == 256, "slices must be 256 pixels on their long side"
        self.encodes += 1
        return ThresholdSlice(image, image.shape)

    def predict_256(self, boxes_256, encoded: ThresholdSlice, slice_index: int = 0) -> Prediction:
        boxes = np.asarray(boxes_256, dtype=np.float64).reshape(-1, 4)
        height, width = encoded.original_size
        masks = np.zeros((len(boxes), height, width), dtype=bool)
        scores = np.zeros(len(boxes), dtype=np.float32)
        bright = encoded.image > 127
        for index, (x0, y0, x1, y1) in enumerate(boxes.astype(np.int64)):
            inside = (slice(max(y0, 0), y1 + 1), slice(max(x0, 0), x1 + 1))
            masks[index][inside] = bright[inside]
            scores[index] = bright[inside].mean() if bright[inside].size else 0.0
        self.decodes += len(boxes)
        return Prediction(masks, scores, np.zeros((len(boxes), 256, 256), np.float32), boxes)
