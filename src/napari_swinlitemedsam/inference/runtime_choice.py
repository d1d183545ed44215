"""Which runtime and precision run the encoder: chosen for this model on this machine.

``precision="auto"`` and ``runtime="auto"`` (the defaults) are resolved here:

1. The candidates: torch float32 always; ONNX Runtime float32 when it is installed and the
   model runs on the CPU; torch bfloat16 only where the hardware computes it natively (CPU
   flags ``avx512_bf16``/``amx_bf16``, see :mod:`.cpu_features`; on CUDA,
   ``torch.cuda.is_bf16_supported()``). Unknown hardware counts as "no": emulated bfloat16
   is many times slower than float32. A forced ``precision`` or ``runtime`` narrows the list.
2. One candidate left: it is used, nothing is measured.
3. Several: a **self-check** (:func:`measure`) encodes a few real slices of the bundled samples
   with each candidate, in interleaved rounds, and decodes their objects' boxes. A candidate
   qualifies when every object's mask agrees with torch float32's at DSC >= 0.98 and, for
   float32 runtimes, every logit lies within 1e-3 of the logit range of torch's. The fastest
   qualifying candidate wins if it beats torch float32 by at least 10 %; otherwise torch
   float32 stays (a smaller gain is within the noise of a few runs on a busy machine).
4. The decision is cached as a small JSON file in the user cache folder (or in
   ``$SWINLITEMEDSAM_RUNTIME_CHOICE_DIR``: e.g. one folder shared by the workers of a
   cluster run, or a test session's temporary folder), keyed by the CPU model and flags, the
   device, the thread count, the versions of torch, onnxruntime and openvino, and the model:
   the self-check runs once per model and machine, and again when any of these change.
   A float32 decision is keyed by the model's **architecture** (parameter names, shapes and
   dtypes), not its weights: speed and the exported graph's correctness are properties of the
   architecture, and float32 runtimes compute the same arithmetic whatever the values, so a
   fine-tuned model reuses its base model's decision instead of spending the self-check again
   (its exported graph is still rebuilt for its weights). A bfloat16 decision is keyed by the
   weights as well: whether 8 bits of mantissa keep the masks can depend on the values.

Tolerances. float32 runtimes compute the same arithmetic in another order; their outputs differ
by ~1e-6 of the logit range, so 1e-3 leaves a thousand-fold margin and still catches a wrong
graph (which is off by O(1)). bfloat16 keeps 8 bits of mantissa, so its logits cannot meet a
float32 bound; it is judged by its masks alone. DSC 0.98 is what a one-pixel shift of the
boundary already costs on a 100-pixel-wide object: less is not visible to an annotator.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import numpy as np
import torch

from napari_swinlitemedsam.inference.cpu_features import CpuDescription, describe_cpu
from napari_swinlitemedsam.inference.onnx_encoder import RUNTIMES, onnx_available
from napari_swinlitemedsam.inference.openvino_encoder import openvino_available
from napari_swinlitemedsam.inference.precision import PRECISION_OPTIONS
from napari_swinlitemedsam.inference.runtime_choice_store import (  # noqa: F401 (re-exported)
    CHOICE_DIR_ENV,
    SELF_CHECK_VERSION,
    architecture_fingerprint,
    choice_key,
    default_choice_dir,
    self_check_lock,
)
from napari_swinlitemedsam.storage.atomic_files import write_atomically

RUNTIME_OPTIONS = ("auto", *RUNTIMES)
MASK_DSC_FLOOR = 0.98
LOGIT_BOUND = 1e-3  # of the baseline's logit range, float32 runtimes only
MIN_SPEEDUP = 1.10
ROUNDS = 3  # round 0 warms up; the best of the others is the candidate's time
CHECK_OBJECTS = 6  # boxes per check slice


class EmulatedBf16Warning(UserWarning):
    """bfloat16 was asked for on hardware that only emulates it (slower than float32)."""


@dataclass(frozen=True)
class Candidate:
    """A way to run the encoder step: ``runtime`` (torch, onnxruntime) at ``precision``."""

    runtime: str
    precision: str

    @property
    def label(self) -> str:
        return f"{self.runtime} {self.precision}"


BASELINE = Candidate("torch", "fp32")


@dataclass(frozen=True)
class RuntimeChoice:
    """What runs the encoder, and why.

    Attributes:
        runtime, precision: the choice (never "auto").
        how: ``"forced"``, ``"only candidate"``, ``"measured"``, ``"cached"`` (measured
            earlier on this machine) or ``"not measured"`` (several candidates, no self-check
            asked for: the baseline).
        seconds: measured seconds per encode, by candidate label (empty unless measured).
        rejected: candidate label -> why it did not qualify.
        cpu: the CPU summary line the decision was made on.
    """

    runtime: str
    precision: str
    how: str
    seconds: dict[str, float] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)
    cpu: str = ""

    @property
    def label(self) -> str:
        return f"{self.runtime} {self.precision}"

    def describe(self) -> str:
        """One line for a status bar or a log: the choice, how it was made, the speed-up."""
        text = f"{self.label} ({self.how}"
        baseline = self.seconds.get(BASELINE.label)
        mine = self.seconds.get(self.label)
        if baseline and mine and self.label != BASELINE.label:
            text += f", {baseline / mine:.2f}x torch fp32"
        return text + ")"


def bf16_is_native(device: torch.device, cpu: CpuDescription) -> bool:
    """Whether ``device`` computes bfloat16 in hardware (unknown counts as no)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        return cpu.native_bf16 is True
    return False


def candidates_for(
    precision: str,
    runtime: str,
    device: torch.device,
    cpu: CpuDescription,
    onnx_installed: bool,
    openvino_installed: bool = False,
) -> list[Candidate]:
    """The candidates that ``precision`` and ``runtime`` (each may be "auto") allow here."""
    if precision not in PRECISION_OPTIONS:
        raise ValueError(f"precision must be one of {PRECISION_OPTIONS}, got {precision!r}")
    if runtime not in RUNTIME_OPTIONS:
        raise ValueError(f"runtime must be one of {RUNTIME_OPTIONS}, got {runtime!r}")
    if precision != "auto" and runtime != "auto":
        return [Candidate(runtime, precision)]
    if precision == "bf16":
        return [Candidate("torch", "bf16")]  # only torch runs bf16
    if runtime in ("onnxruntime", "openvino"):
        return [Candidate(runtime, "fp32")]  # the exported graphs run float32 only
    found = [BASELINE]
    if runtime == "auto" and onnx_installed and device.type == "cpu":
        found.append(Candidate("onnxruntime", "fp32"))
    if runtime == "auto" and openvino_installed and device.type == "cpu":
        found.append(Candidate("openvino", "fp32"))
    if precision == "auto" and bf16_is_native(device, cpu):
        found.append(Candidate("torch", "bf16"))
    if precision == "fp32":
        found = [c for c in found if c.precision == "fp32"]
    return found


def emulated_bf16_message(model_name: str, cpu: CpuDescription) -> str:
    """The warning for an explicit bf16 on a CPU without native bfloat16."""
    return (
        f"bf16 on this CPU ({cpu.summary()}) is emulated in software: the encoder runs "
        f"{EMULATED_BF16_SLOWDOWN.get(model_name, EMULATED_BF16_SLOWDOWN['litemedsam'])} than "
        "fp32 (measured on an AVX2 CPU, docs/performance.md); use precision 'auto' or 'fp32'"
    )


# Encoder seconds bf16 / fp32 on an AVX2-only AMD EPYC (2 threads): LiteMedSAM 18.6x in the
# benchmark smoke run that found the trap, Swin-LiteMedSAM 9-13x (docs/performance.md).
EMULATED_BF16_SLOWDOWN = {
    "litemedsam": "about 19x slower",
    "swin-litemedsam": "about 10x slower",
}


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
    rounds: int = ROUNDS,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[dict[str, float], dict[str, str]]:
    """Time and check each candidate; ``(seconds by label, rejected label -> reason)``.

    ``make_predictor(candidate)`` gives a predictor (``set_image``/``predict``) that runs its
    encoder that way; ``candidates[0]`` must be the torch fp32 baseline. Round r encodes case
    ``r % len(cases)`` with every candidate in turn (interleaved, so that load on the machine
    hits all alike); round 0 is a warm-up (ONNX export, allocator); a candidate's time is its
    fastest later round of encode + decode. A candidate that fails is rejected with its error.
    """
    if candidates[0] != BASELINE:
        raise ValueError("the first candidate must be torch fp32, the reference of the check")
    predictors, rejected = {}, {}
    times: dict[str, list[float]] = {c.label: [] for c in candidates}
    for candidate in candidates:
        try:
            predictors[candidate] = make_predictor(candidate)
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
                # asynchronous (CUDA) encoder; it runs in float32 torch for every candidate.
                result = predictor.predict(case.boxes)
                elapsed = clock() - started
            except (RuntimeError, ValueError, MemoryError) as error:
                if candidate == BASELINE:
                    raise
                rejected[candidate.label] = f"failed: {error}"
                continue
            if round_index > 0:
                times[candidate.label].append(elapsed)
            if candidate == BASELINE:
                reference = result
            elif (problem := agreement_problem(candidate, reference, result)) is not None:
                rejected[candidate.label] = problem
    seconds = {label: min(values) for label, values in times.items() if values}
    return seconds, rejected


def pick(seconds: dict[str, float], rejected: dict[str, str]) -> Candidate:
    """The fastest qualifying candidate if it beats torch fp32 by :data:`MIN_SPEEDUP`."""
    baseline = seconds[BASELINE.label]
    best, best_time = BASELINE, baseline
    for label, value in seconds.items():
        if label not in rejected and value * MIN_SPEEDUP <= baseline and value < best_time:
            best, best_time = Candidate(*label.split(" ")), value
    return best


def read_cached(path: Path) -> RuntimeChoice | None:
    """A decision stored by :func:`write_cached`, or None if absent or unreadable."""
    try:
        stored = json.loads(path.read_text())
        return RuntimeChoice(**{**stored, "how": "cached"})
    except (OSError, ValueError, TypeError):
        return None


def write_cached(path: Path, choice: RuntimeChoice) -> None:
    """Store ``choice``; a cache that cannot be written only costs a re-measurement."""
    data = json.dumps(asdict(choice), indent=1).encode()

    def write(stream: BinaryIO) -> None:
        stream.write(data)

    with contextlib.suppress(OSError):
        write_atomically(path, write, durable=False)


def choose_runtime(
    model: torch.nn.Module,
    make_predictor: Callable[[Candidate], CheckablePredictor] | None,
    precision: str = "auto",
    runtime: str = "auto",
    cpu: CpuDescription | None = None,
    onnx_installed: bool | None = None,
    choice_dir: Path | None = None,
    openvino_installed: bool | None = None,
    cases: Callable[[], Sequence[CheckCase]] = bundled_check_cases,
) -> RuntimeChoice:
    """Resolve ``precision`` and ``runtime`` (each "auto" or a forced value) for ``model``.

    ``make_predictor`` builds a predictor for a candidate (see :func:`measure`); None means
    "do not measure": with several candidates, torch fp32 is used (``how="not measured"``).
    ``cpu``, ``onnx_installed``, ``choice_dir`` and ``cases`` default to this machine, the user
    cache folder and the bundled samples; tests inject their own.
    """
    cpu = cpu if cpu is not None else describe_cpu()
    device = next(model.parameters(), torch.empty(0)).device  # no parameters: a CPU stand-in
    installed = onnx_available() if onnx_installed is None else onnx_installed
    if openvino_installed is None:
        openvino_installed = openvino_available()
    found = candidates_for(precision, runtime, device, cpu, installed, openvino_installed)
    summary = cpu.summary()
    if len(found) == 1:
        how = "only candidate" if precision == runtime == "auto" else "forced"
        return RuntimeChoice(found[0].runtime, found[0].precision, how, cpu=summary)
    if make_predictor is None:
        return RuntimeChoice(BASELINE.runtime, BASELINE.precision, "not measured", cpu=summary)
    folder = choice_dir if choice_dir is not None else default_choice_dir()
    options = (precision, runtime)

    # float32 decisions per architecture, bfloat16 ones per weights (see the module docstring)
    # (the weights' hash is only computed when no float32 decision is stored)
    def path(with_weights: bool) -> Path:
        return folder / f"{choice_key(model, device, cpu, options, with_weights)}.json"

    def stored() -> RuntimeChoice | None:
        for with_weights in (False, True):
            cached = read_cached(path(with_weights))
            if cached is not None:
                return cached
        return None

    if (cached := stored()) is not None:
        return cached
    # One self-check of this model at a time: processes starting together (cluster workers,
    # test workers, two viewers) would measure each other's load; who waited reads the decision.
    with self_check_lock(path(with_weights=False)):
        if (cached := stored()) is not None:
            return cached
        seconds, rejected = measure(found, make_predictor, cases())
        chosen = pick(seconds, rejected)
        choice = RuntimeChoice(
            chosen.runtime, chosen.precision, "measured", seconds, rejected, summary
        )
        write_cached(path(with_weights=chosen.precision != "fp32"), choice)
    return choice
