"""A stand-in predictor on a fake clock for the runtime self-check's tests: its encode and
decode take the seconds it is given, its masks are box masks (optionally shrunk) and its logits
a fixed ramp (optionally offset), so no test depends on the speed of the machine running it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_swinlitemedsam.inference.predictor import Prediction
from napari_swinlitemedsam.inference.self_check import CheckCase, measure


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class FakePredictor:
    """Encodes in ``seconds`` of the fake clock; its masks are a box mask, optionally shrunk
    by ``shrink`` pixels, and its logits are offset by ``logit_error``."""

    clock: FakeClock
    seconds: float
    shrink: int = 0
    logit_error: float = 0.0
    fails: bool = False
    decode_seconds: float = 0.0
    encodes: int = 0

    def set_image(self, image):
        if self.fails:
            raise RuntimeError("kernel not available")
        self.encodes += 1
        self.clock.now += self.seconds
        self.shape = image.shape

    def predict(self, boxes):
        self.clock.now += self.decode_seconds
        masks = np.zeros((len(boxes), *self.shape), bool)
        for mask, (x0, y0, x1, y1) in zip(masks, boxes.astype(int), strict=True):
            s = self.shrink
            mask[y0 + s : y1 + 1 - s, x0 + s : x1 + 1 - s] = True
        logits = np.linspace(-10, 10, 256 * 256, dtype=np.float32).reshape(1, 256, 256)
        logits = np.repeat(logits, len(boxes), axis=0) + self.logit_error
        return Prediction(masks, np.ones(len(boxes)), logits, boxes)


CASES = [CheckCase(np.zeros((120, 120), np.uint8), np.array([[10.0, 10, 109, 109]]))]


def measure_on_a_fake_clock(variants, cases=CASES, **options):
    """:func:`measure` of ``variants`` (candidate -> FakePredictor options) on one fake clock."""
    clock = FakeClock()
    predictors = {c: FakePredictor(clock, **kwargs) for c, kwargs in variants.items()}
    return measure(list(variants), predictors.__getitem__, cases, clock=clock, **options)
