"""Flip test-time averaging (a propagation candidate in benchmarks/): the mirrored box lands on
the mirrored object, so averaging agrees with the plain prediction on a clear object.

Uses the real bundled LiteMedSAM weights on one small image (4 encodes, a few decodes).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from napari_swinlitemedsam.evaluation.metrics import dice
from napari_swinlitemedsam.inference import transforms
from napari_swinlitemedsam.inference.predictor import BoxPredictor

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from flip_averaging import FlipAveragedPredictor  # noqa: E402

# A bright disc on a dark background is an easy object: both the plain and the averaged masks
# cover it, and differ only along its rim (bilinear upsampling of two slightly different
# logit maps). A wrongly mirrored box would prompt the empty side of the image, halving the
# averaged logits inside the disc and losing most of it (DSC far below 0.9).
MIN_AGREEMENT_DSC = 0.95
# The mirrored decode alone, against the disc: LiteMedSAM's mask of this disc from a box is
# not pixel-tight (0.94 measured on the mirrored image); a box mirrored to the wrong place
# would find background (DSC near 0). 0.9 lies between the two.
MIN_MIRRORED_DSC = 0.9


def off_centre_disc(height: int = 96, width: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) uint8 image with a disc left of centre, and its (H, W) bool mask."""
    yy, xx = np.mgrid[:height, :width]
    disc = (yy - 50) ** 2 + (xx - 35) ** 2 < 18**2
    return np.where(disc, 210, 30).astype(np.uint8), disc


@pytest.fixture(scope="module")
def predictor():
    return BoxPredictor.from_pretrained(
        "litemedsam", device="cpu", runtime="torch", precision="fp32"
    )


@pytest.mark.slow
def test_averaged_mask_agrees_with_the_plain_one_on_a_clear_object(predictor):
    image, disc = off_centre_disc()
    box = np.array([[17.0, 32.0, 53.0, 68.0]])  # the disc's box, inclusive pixels
    boxes_256 = transforms.boxes_to_256(box, image.shape)
    plain = predictor.predict_256(boxes_256, predictor.encode(image), slice_index=0)
    flipped = FlipAveragedPredictor(predictor)
    averaged = flipped.predict_256(boxes_256, flipped.encode(image, key="disc"), slice_index=0)
    assert averaged.masks.shape == (1, *image.shape)
    assert dice(averaged.masks[0], plain.masks[0]) >= MIN_AGREEMENT_DSC
    assert dice(averaged.masks[0], disc) >= MIN_AGREEMENT_DSC
    # the mirrored half is decoded on the mirrored slice, where the disc lies on the right
    mirrored = predictor.encode(np.ascontiguousarray(image[:, ::-1]))
    far_edge = (image.shape[1] - 1) * transforms.frame_scale(image.shape)
    x0, y0, x1, y1 = boxes_256[0]
    mirrored_box = np.array([[far_edge - x1, y0, far_edge - x0, y1]])
    right = predictor.predict_256(mirrored_box, mirrored, slice_index=0).masks[0]
    assert dice(right[:, ::-1], disc) >= MIN_MIRRORED_DSC
