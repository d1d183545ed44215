"""A stand-in segmenter whose encoder waits for the test and can be told to fail.

Used by the fault tests of the widget: with the encoder held at a gate, a test can remove
layers, switch the image or the model "while a worker runs" at an exactly known moment, and
with injected failures it can check that nothing is lost when a job dies.
"""

from __future__ import annotations

import threading

import torch

from stub_segmenter import CountingSegmenter

GATE_TIMEOUT_S = 120.0


class GatedSegmenter(CountingSegmenter):
    """:class:`CountingSegmenter` whose ``encode`` blocks until ``gate`` is set and raises
    ``encode_error`` when it is not None; ``decode`` raises ``decode_error`` once
    ``decode_calls`` reaches ``fail_decode_at`` (0-based; None: never)."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed)
        self.gate = threading.Event()
        self.gate.set()
        self.waiting = threading.Event()
        self.encode_error: BaseException | None = None
        self.decode_error: BaseException | None = None
        self.fail_decode_at: int | None = None
        self.decode_calls = 0

    def encode(self, images: torch.Tensor):
        self.waiting.set()
        if not self.gate.wait(GATE_TIMEOUT_S):
            raise TimeoutError("the test never opened the gate")
        self.waiting.clear()
        if self.encode_error is not None:
            raise self.encode_error
        return super().encode(images)

    def decode(self, features, boxes, *args, **kwargs):
        calls, self.decode_calls = self.decode_calls, self.decode_calls + 1
        if self.fail_decode_at is not None and calls >= self.fail_decode_at:
            raise self.decode_error or RuntimeError("injected decoder failure")
        return super().decode(features, boxes, *args, **kwargs)


def gated_predictor(seed: int = 0):
    """A :class:`BoxPredictor` (box prompts) around a new :class:`GatedSegmenter`."""
    from napari_swinlitemedsam.inference.predictor import BoxPredictor
    from napari_swinlitemedsam.model.registry import PROMPTS_BOX

    return BoxPredictor(GatedSegmenter(seed), PROMPTS_BOX, model_name=f"gated-{seed}")
