"""How the self-check's measurements become a decision: the fastest qualifying runtime for
the encoder and for a later box, and when one more timed round could not change them.

See :mod:`.runtime_choice` for the candidates and the tolerances that qualify them.
"""

from __future__ import annotations

from collections.abc import Callable

from napari_swinlitemedsam.inference.graph_sessions import GRAPH_RUNTIMES
from napari_swinlitemedsam.inference.self_check import BASELINE, Candidate, Measured

MIN_SPEEDUP = 1.10
# How far one timed round may move a candidate's time on a quiet machine: the self-check stops
# after its first timed round when no such move could change the decision (see settled_by).
ROUND_NOISE = 0.05


def pick(seconds: dict[str, float], rejected: dict[str, str]) -> Candidate:
    """The fastest qualifying candidate if it beats torch fp32 by :data:`MIN_SPEEDUP`."""
    baseline = seconds[BASELINE.label]
    best, best_time = BASELINE, baseline
    for label, value in seconds.items():
        if label not in rejected and value * MIN_SPEEDUP <= baseline and value < best_time:
            best, best_time = Candidate(*label.split(" ")), value
    return best


def pick_decoder(box_seconds: dict[str, float], rejected: dict[str, str]) -> str:
    """The graph runtime whose later box is fastest if it beats torch fp32's by
    :data:`MIN_SPEEDUP` (its candidate qualified), else ``"torch"``."""
    baseline = box_seconds.get(BASELINE.label)
    if baseline is None:
        return "torch"
    best, best_time = "torch", baseline
    for label, value in box_seconds.items():
        runtime = label.split(" ")[0]
        if runtime not in GRAPH_RUNTIMES or label in rejected:
            continue
        if value * MIN_SPEEDUP <= baseline and value < best_time:
            best, best_time = runtime, value
    return best


def _settled(times: dict[str, float], winner: str, choose: Callable) -> bool:
    """Whether one more round could not change the decision ``winner`` (a label) of
    ``choose(times)`` in a way that matters: with the winner's time :data:`ROUND_NOISE` slower
    and every other that much faster (the worst case of one more round), ``choose`` still
    gives the winner, or a candidate measured within 2 x ROUND_NOISE of it (two runtimes that
    close are equally good: a further round could not tell them apart either)."""
    shaken = {
        label: value * (1 + ROUND_NOISE if label == winner else 1 - ROUND_NOISE)
        for label, value in times.items()
    }
    other = choose(shaken)
    return other == winner or times[other] <= times[winner] * (1 + 2 * ROUND_NOISE)


def settled_by(graph_decoder: bool) -> Callable[[Measured], bool]:
    """The self-check's early stop (:func:`measure`'s ``settled``): the encoder's pick, and for
    a model with a graph decoder the box decoder's pick, would hold (or change only to an equally fast
    candidate) whatever one more round measured within :data:`ROUND_NOISE`. Clear gaps
    (LiteMedSAM on ONNX Runtime ~2x torch) stop after one timed round; a gain near the 10 %
    bar runs all rounds."""

    def settled(measured: Measured) -> bool:
        rejected = measured.rejected

        def encoder(times: dict[str, float]) -> str:
            return pick(times, rejected).label

        def decoder(times: dict[str, float]) -> str:
            return f"{pick_decoder(times, rejected)} fp32"

        encoder_settled = _settled(measured.seconds, encoder(measured.seconds), encoder)
        if not graph_decoder or not encoder_settled:
            return encoder_settled
        return _settled(measured.box_seconds, decoder(measured.box_seconds), decoder)

    return settled
