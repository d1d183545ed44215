"""The runtime self-check's measurement (:mod:`napari_swinlitemedsam.inference.self_check`)
and the picks made from it: which candidate qualifies, which wins, when the check stops early.
Timings come from a fake clock (``fake_self_check``)."""

from __future__ import annotations

import numpy as np
import pytest

from fake_self_check import CASES, FakeClock, FakePredictor, measure_on_a_fake_clock
from napari_swinlitemedsam.inference import runtime_choice
from napari_swinlitemedsam.inference.runtime_choice import (
    BASELINE,
    Candidate,
    CheckCase,
    measure,
    pick,
)

ORT = Candidate("onnxruntime", "fp32")
BF16 = Candidate("torch", "bf16")
_measure = measure_on_a_fake_clock


def test_a_faster_runtime_that_agrees_is_chosen():
    seconds, rejected, _ = _measure({BASELINE: {"seconds": 2.0}, ORT: {"seconds": 1.0}})
    assert seconds == {"torch fp32": 2.0, "onnxruntime fp32": 1.0}
    assert rejected == {}
    assert pick(seconds, rejected) == ORT


def test_a_gain_within_the_noise_keeps_torch_fp32():
    seconds, rejected, _ = _measure({BASELINE: {"seconds": 2.0}, ORT: {"seconds": 1.9}})
    assert pick(seconds, rejected) == BASELINE


def test_faster_but_different_masks_or_logits_are_rejected():
    # 100x100 box shrunk by 2 px on each side: DSC = 2*96²/(100²+96²) = 0.9796 < 0.98
    seconds, rejected, _ = _measure(
        {BASELINE: {"seconds": 2.0}, BF16: {"seconds": 0.5, "shrink": 2}}
    )
    assert "DSC" in rejected["torch bf16"]
    assert pick(seconds, rejected) == BASELINE
    # float32 runtimes must also keep their logits within 1e-3 of the range (20 here)
    seconds, rejected, _ = _measure(
        {BASELINE: {"seconds": 2.0}, ORT: {"seconds": 0.5, "logit_error": 0.05}}
    )
    assert "logits" in rejected["onnxruntime fp32"]
    # ... which bf16 is not held to: 8 bits of mantissa cannot meet a float32 bound
    seconds, rejected, _ = _measure(
        {BASELINE: {"seconds": 2.0}, BF16: {"seconds": 0.5, "logit_error": 0.05}}
    )
    assert pick(seconds, rejected) == BF16


@pytest.mark.parametrize(
    ("box_only", "speeds", "rounds"),
    [
        # ONNX Runtime 2x faster, boxes too: one timed round after the warm-up settles it
        (True, {BASELINE: (2.0, 0.10), ORT: (1.0, 0.05)}, 2),
        # an 11 % gain: 5 % of noise could take it under the 10 % bar, so all rounds run
        (False, {BASELINE: (2.0, 0.10), ORT: (1.8, 0.10)}, 3),
        # torch stays, clearly: settled
        (False, {BASELINE: (2.0, 0.10), ORT: (2.5, 0.10)}, 2),
        # the encoder's pick is clear but the box decoder's is a near tie (for box-only models)
        (True, {BASELINE: (2.0, 0.10), ORT: (1.0, 0.09)}, 3),
        (False, {BASELINE: (2.0, 0.10), ORT: (1.0, 0.09)}, 2),
        # two graph runtimes within 2 %: either is as good, one more round could not tell
        (
            False,
            {BASELINE: (2.0, 0.10), ORT: (1.0, 0.05), Candidate("openvino", "fp32"): (0.98, 0.05)},
            2,
        ),
    ],
)
def test_the_check_stops_early_only_when_one_more_round_could_not_change_the_decision(
    box_only, speeds, rounds
):
    clock = FakeClock()
    predictors = {
        c: FakePredictor(clock, seconds, decode_seconds=box) for c, (seconds, box) in speeds.items()
    }
    two_cases = [CASES[0], CheckCase(np.zeros((90, 100), np.uint8), np.array([[5.0, 5, 60, 80]]))]
    measured = measure(
        list(speeds),
        predictors.__getitem__,
        two_cases,
        clock=clock,
        settled=runtime_choice.settled_by(box_only),
    )
    assert [p.encodes for p in predictors.values()] == [rounds] * len(speeds)
    assert set(measured.seconds) == {c.label for c in speeds}
    # however many rounds ran, every case was checked (a warm-up and a timed round at least)
    three_cases = [*two_cases, CASES[0]]
    for predictor in predictors.values():
        predictor.encodes = 0
    measure(list(speeds), predictors.__getitem__, three_cases, clock=clock, settled=lambda m: True)
    assert [p.encodes for p in predictors.values()] == [3] * len(speeds)


def test_a_runtime_that_fails_is_left_out():
    seconds, rejected, _ = _measure({BASELINE: {"seconds": 2.0}, ORT: {"seconds": 1, "fails": 1}})
    assert "kernel not available" in rejected["onnxruntime fp32"]
    assert pick(seconds, rejected) == BASELINE


OPENVINO = Candidate("openvino", "fp32")


def test_later_boxes_are_timed_apart_and_their_fastest_runtime_decodes():
    """On the development CPU OpenVINO encoded fastest and ONNX Runtime decoded a box fastest:
    the two steps are chosen apart."""
    measured = _measure(
        {
            BASELINE: {"seconds": 2.0, "decode_seconds": 0.10},
            ORT: {"seconds": 1.5, "decode_seconds": 0.06},
            OPENVINO: {"seconds": 1.0, "decode_seconds": 0.10},
            BF16: {"seconds": 3.0, "decode_seconds": 0.10},
        }
    )
    assert measured.box_seconds == pytest.approx(
        {"torch fp32": 0.10, "onnxruntime fp32": 0.06, "openvino fp32": 0.10}
    )  # bf16 decodes in torch: not timed
    assert pick(measured.seconds, measured.rejected) == OPENVINO
    assert runtime_choice.pick_decoder(measured.box_seconds, measured.rejected) == "onnxruntime"
    # within the noise, or from a candidate whose masks disagreed: torch decodes
    assert runtime_choice.pick_decoder({"torch fp32": 0.1, "onnxruntime fp32": 0.095}, {}) == (
        "torch"
    )
    rejected = {"onnxruntime fp32": "logits differ"}
    assert runtime_choice.pick_decoder(measured.box_seconds, rejected) == "torch"
