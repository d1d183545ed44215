"""What :meth:`~.predictor.BoxPredictor.predict` returns for the boxes of one image."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Prediction:
    """Decoder output for N boxes on one image.

    Attributes:
        masks: (N, H, W) bool at the original image size.
        scores: (N,) predicted IoU of each mask.
        low_res_logits: (N, 256, 256) float32 logits in the padded 256 frame.
        boxes_256: (N, 4) the boxes as given to the model (256 frame).
    """

    masks: np.ndarray
    scores: np.ndarray
    low_res_logits: np.ndarray
    boxes_256: np.ndarray
