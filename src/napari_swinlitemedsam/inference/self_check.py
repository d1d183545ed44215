"""The runtime self-check's measurement: each candidate encodes real slices and decodes their
boxes, interleaved, and its results are compared with torch float32's.

See :mod:`.runtime_choice` for the candidates, the decision and its tolerances; this module
times and checks, it decides nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, NamedTuple, Protocol

import numpy as np

MASK_DSC_FLOOR = 0.98
LOGIT_BOUND = 1e-3  # of the baseline's logit range, float32 runtimes only
MAX_ROUNDS = 3  # round 0 warms up; the best of the others is the candidate's time
MIN_ROUNDS = 2  # a warm-up and one timed round, if the decision is settled by then
CHECK_OBJECTS = 6  # boxes per check slice
BOX_REPEATS = 2  # one-box decodes timed per round and float32 candidate (a later box)


@dataclass(frozen=True)
class Candidate:
    """A way to run the encoder step: ``runtime`` (torch, onnxruntime, openvino) at
    ``precision``; a float32 graph runtime also decodes boxes there (:mod:`.graph_decoder`)."""

    runtime: str
    precision: str

    @property
    def label(self) -> str:
        return f"{self.runtime} {self.precision}"


BASELINE = Candidate("torch", "fp32")


class Measured(NamedTuple):
    """What :func:`measure` found, by candidate label: ``seconds`` per encode + decode of a
    check slice, ``box_seconds`` per later one-box decode (float32 candidates), ``rejected``
    label -> why it did not qualify."""

    seconds: dict[str, float]
    rejected: dict[str, str]
    box_seconds: dict[str, float]


class CheckablePredictor(Protocol):
    """What the self-check needs of a predictor (``BoxPredictor`` has it)."""

    def set_image(self, image: np.ndarray) -> Any: ...

    def predict(self, boxes: np.ndarray) -> Any: ...


@dataclass(frozen=True)
class CheckCase:
    """One slice of the self-check: ``image`` (H, W) and ``boxes`` (N, 4) xyxy inclusive."""

    image: np.ndarray
    boxes: np.ndarray


def _boxes_of(labels: np.ndarray, count: int) -> np.ndarray:
    """(N, 4) inclusive xyxy boxes of the ``count`` largest labelled objects of (H, W) labels."""
    ids, sizes = np.unique(labels[labels > 0], return_counts=True)
    boxes = []
    for label in ids[np.argsort(-sizes)][:count]:
        ys, xs = np.nonzero(labels == label)
        boxes.append([xs.min(), ys.min(), xs.max(), ys.max()])
    return np.array(boxes, dtype=np.float64).reshape(-1, 4)


def bundled_check_cases() -> list[CheckCase]:
    """Two real slices from the samples shipped in the package: microscopy nuclei (512², many
    small objects) and the middle slice of the head MR (large objects).

    Read with numpy directly: the sample catalogue lives in ``io``, a later layer.
    """
    folder = resources.files("napari_swinlitemedsam") / "data"
    cases = []
    for name in ("nuclei2d.npz", "brain_mr.npz"):
        with resources.as_file(folder / name) as path, np.load(path) as data:
            image, labels = data["image"], data["labels"]
        if image.ndim == 3:
            middle = image.shape[0] // 2
            image, labels = image[middle], labels[middle]
        cases.append(CheckCase(image, _boxes_of(labels, CHECK_OBJECTS)))
    return cases


def _dsc(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def agreement_problem(candidate: Candidate, reference, result) -> str | None:
    """Why ``result`` (a Prediction) does not agree with the float32 ``reference``, or None."""
    for index, (ours, theirs) in enumerate(zip(result.masks, reference.masks, strict=True)):
        score = _dsc(ours, theirs)
        if score < MASK_DSC_FLOOR:
            return f"object {index}: mask DSC {score:.4f} < {MASK_DSC_FLOOR} against torch fp32"
    if candidate.precision == "fp32":
        logits = reference.low_res_logits
        bound = LOGIT_BOUND * max(float(logits.max() - logits.min()), 1.0)
        worst = float(np.abs(result.low_res_logits - logits).max())
        if worst > bound:
            return f"logits differ by {worst:.3g} > {bound:.3g} from torch fp32"
    return None


def measure(
    candidates: Sequence[Candidate],
    make_predictor: Callable[[Candidate], CheckablePredictor],
    cases: Sequence[CheckCase],
    rounds: int = MAX_ROUNDS,
    clock: Callable[[], float] = time.perf_counter,
    settled: Callable[[Measured], bool] | None = None,
) -> Measured:
    """Time and check each candidate in one go (:func:`measure_in_steps` run to its end)."""
    steps = measure_in_steps(candidates, make_predictor, cases, rounds, clock, settled)
    while True:
        try:
            next(steps)
        except StopIteration as finished:
            return finished.value


def measure_in_steps(
    candidates: Sequence[Candidate],
    make_predictor: Callable[[Candidate], CheckablePredictor],
    cases: Sequence[CheckCase],
    rounds: int = MAX_ROUNDS,
    clock: Callable[[], float] = time.perf_counter,
    settled: Callable[[Measured], bool] | None = None,
) -> Generator[str, None, Measured]:
    """Time and check each candidate, one trial per step: yields the label of the candidate
    that just encoded and decoded a case (about one encode of work) or, before the rounds,
    opened one of its graphs (a predictor's optional ``graph_openings()``: export and
    compile, one call per graph), and returns what was measured. Whoever drives it
    may do other work between steps (the annotator decodes the user's boxes), so a trial's
    times are never taken across a pause.

    ``make_predictor(candidate)`` gives a predictor (``set_image``/``predict``) that runs its
    encoder that way; ``candidates[0]`` must be the torch fp32 baseline. Round r encodes case
    ``r % len(cases)`` with every candidate in turn (interleaved, so that load on the machine
    hits all alike) and decodes the case's boxes; a float32 candidate then decodes its first
    box alone :data:`BOX_REPEATS` times (a later box on an encoded image: where the decoder
    runs on the candidate's graph runtime, this times it). Round 0 is a warm-up (ONNX export,
    allocator); a candidate's time is its fastest later round. A candidate that fails is
    rejected with its error.

    After :data:`MIN_ROUNDS` rounds, and once every case has been checked, ``settled(what
    was measured so far)`` may end the check early: no more rounds are run when it returns
    True (the caller decides what a settled decision is; None: all ``rounds`` run).
    """
    if candidates[0] != BASELINE:
        raise ValueError("the first candidate must be torch fp32, the reference of the check")
    predictors: dict[Candidate, CheckablePredictor] = {}
    rejected: dict[str, str] = {}
    times: dict[str, list[float]] = {c.label: [] for c in candidates}
    box_times: dict[str, list[float]] = {c.label: [] for c in candidates}
    so_far = Measured({}, rejected, {})
    for candidate in candidates:
        try:
            predictors[candidate] = make_predictor(candidate)
            # one-time work of a graph runtime (export, compile), a step per graph
            for opening in getattr(predictors[candidate], "graph_openings", list)():
                opening()
                yield candidate.label
        except (ImportError, RuntimeError, ValueError, OSError) as error:
            rejected[candidate.label] = f"could not start: {error}"
    for round_index in range(rounds):
        case = cases[round_index % len(cases)]
        reference = None
        for candidate in candidates:
            predictor = predictors.get(candidate)
            if predictor is None or candidate.label in rejected:
                continue
            try:
                started = clock()
                predictor.set_image(case.image)
                # The decode is timed too: it copies the masks to the host, which waits for an
                # asynchronous (CUDA) encoder.
                result = predictor.predict(case.boxes)
                elapsed = clock() - started
                later_boxes = []
                for _ in range(BOX_REPEATS if candidate.precision == "fp32" else 0):
                    started = clock()
                    predictor.predict(case.boxes[:1])
                    later_boxes.append(clock() - started)
            except (RuntimeError, ValueError, MemoryError) as error:
                if candidate == BASELINE:
                    raise
                rejected[candidate.label] = f"failed: {error}"
                continue
            if round_index > 0:
                times[candidate.label].append(elapsed)
                box_times[candidate.label] += later_boxes
            if candidate == BASELINE:
                reference = result
            elif (problem := agreement_problem(candidate, reference, result)) is not None:
                rejected[candidate.label] = problem
            yield candidate.label
        so_far = _fastest(times, box_times, rejected)
        enough = round_index + 1 >= max(MIN_ROUNDS, len(cases))
        if enough and settled is not None and settled(so_far):
            break
    return so_far


def _fastest(
    times: dict[str, list[float]], box_times: dict[str, list[float]], rejected: dict[str, str]
) -> Measured:
    """Each candidate's fastest timed round and later box (copies: measuring goes on)."""
    seconds = {label: min(values) for label, values in times.items() if values}
    box_seconds = {label: min(values) for label, values in box_times.items() if values}
    return Measured(seconds, dict(rejected), box_seconds)
