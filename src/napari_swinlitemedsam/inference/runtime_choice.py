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
   **The box decoder is chosen apart**: each float32 candidate also times a later box (one
   box on the encoded slice, on its graph runtime: LiteMedSAM's box-only decoder,
   Swin-LiteMedSAM's whole decoder step), and the fastest qualifying one decodes boxes if it
   beats torch's by 10 %, whatever runs the encoder. On the AVX2-only development
   CPU OpenVINO encoded fastest and ONNX Runtime decoded a box fastest.
   The check stops after its first timed round when one more round could not change the
   decision (every time moved by 5 % against it, :func:`settled_by`), or only to a candidate
   measured within 10 % of the winner; a gain near the 10 % bar gets a second timed round.
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
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO

import torch

from napari_swinlitemedsam.inference.cpu_features import CpuDescription, describe_cpu
from napari_swinlitemedsam.inference.graph_sessions import GRAPH_RUNTIMES
from napari_swinlitemedsam.inference.graph_steps import has_graph_decoder
from napari_swinlitemedsam.inference.onnx_encoder import RUNTIMES, onnx_available
from napari_swinlitemedsam.inference.openvino_encoder import openvino_available
from napari_swinlitemedsam.inference.precision import HALF_DTYPES, PRECISION_OPTIONS
from napari_swinlitemedsam.inference.runtime_choice_store import (  # noqa: F401 (re-exported)
    CHOICE_DIR_ENV,
    SELF_CHECK_VERSION,
    architecture_fingerprint,
    choice_key,
    default_choice_dir,
    self_check_lock,
)
from napari_swinlitemedsam.inference.runtime_pick import (  # noqa: F401 (re-exported)
    MIN_SPEEDUP,
    ROUND_NOISE,
    pick,
    pick_decoder,
    settled_by,
)
from napari_swinlitemedsam.inference.self_check import (  # noqa: F401 (re-exported)
    BASELINE,
    LOGIT_BOUND,
    MASK_DSC_FLOOR,
    Candidate,
    CheckablePredictor,
    CheckCase,
    Measured,
    agreement_problem,
    bundled_check_cases,
    measure,
    measure_in_steps,
)
from napari_swinlitemedsam.model.segmenter import PromptableSegmenter
from napari_swinlitemedsam.storage.atomic_files import write_atomically

RUNTIME_OPTIONS = ("auto", *RUNTIMES)


class EmulatedBf16Warning(UserWarning):
    """bfloat16 was asked for on hardware that only emulates it (slower than float32)."""


@dataclass(frozen=True)
class RuntimeChoice:
    """What runs the encoder, and why.

    Attributes:
        runtime, precision: the choice (never "auto").
        how: ``"forced"``, ``"only candidate"``, ``"measured"``, ``"cached"`` (measured
            earlier on this machine), ``"not measured"`` (several candidates, no self-check
            asked for: the baseline) or ``"measuring"`` (the baseline while a deferred
            self-check runs, :mod:`.deferred_self_check`).
        seconds: measured seconds per encode, by candidate label (empty unless measured).
        rejected: candidate label -> why it did not qualify.
        cpu: the CPU summary line the decision was made on.
        decoder: where a box without clicks is decoded (``"torch"``, ``"onnxruntime"``,
            ``"openvino"``; LiteMedSAM boxes with clicks always decode in torch).
            Default: the encoder's runtime.
        box_seconds: measured seconds per later one-box decode, by candidate label.
    """

    runtime: str
    precision: str
    how: str
    seconds: dict[str, float] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)
    cpu: str = ""
    decoder: str = ""
    box_seconds: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.decoder:  # frozen: set through object
            object.__setattr__(self, "decoder", default_decoder(self.runtime))

    @property
    def label(self) -> str:
        return f"{self.runtime} {self.precision}"

    def box_gain(self, runtime: str) -> float | None:
        """Measured torch / ``runtime`` time of a later box, or None if not measured."""
        baseline = self.box_seconds.get(BASELINE.label)
        mine = self.box_seconds.get(f"{runtime} fp32")
        return baseline / mine if baseline and mine else None

    def describe(self) -> str:
        """One line for a status bar or a log: the choice, how it was made, the speed-up."""
        if self.how == "measuring":
            return f"{self.label} (for now: the self-check is measuring the other runtimes)"
        text = f"{self.label} ({self.how}"
        baseline = self.seconds.get(BASELINE.label)
        mine = self.seconds.get(self.label)
        if baseline and mine and self.label != BASELINE.label:
            text += f", {baseline / mine:.2f}x torch fp32"
        return text + ")"


def default_decoder(runtime: str) -> str:
    """Where boxes are decoded when nothing was measured: on the encoder's graph runtime."""
    return runtime if runtime in GRAPH_RUNTIMES else "torch"


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
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(
            f"precision 'fp16' runs on a CUDA GPU only, not on {device.type}; use 'auto', "
            "'fp32' or 'bf16'"
        )
    if precision != "auto" and runtime != "auto":
        return [Candidate(runtime, precision)]
    if precision in HALF_DTYPES:
        return [Candidate("torch", precision)]  # only torch runs half precision
    if runtime in ("onnxruntime", "openvino"):
        return [Candidate(runtime, "fp32")]  # the exported graphs run float32 only
    found = [BASELINE]
    if runtime == "auto" and onnx_installed and device.type == "cpu":
        found.append(Candidate("onnxruntime", "fp32"))
    if runtime == "auto" and openvino_installed and device.type == "cpu":
        found.append(Candidate("openvino", "fp32"))
    if precision == "auto" and bf16_is_native(device, cpu):
        found.append(Candidate("torch", "bf16"))
    if precision == "auto" and device.type == "cuda":  # every CUDA GPU computes float16
        found.append(Candidate("torch", "fp16"))
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


@dataclass(frozen=True)
class SelfCheck:
    """A self-check to run for ``model`` among several ``candidates``, and where its decision
    is kept (:func:`plan_self_check` makes one; :func:`choose_runtime` runs it at once, a
    :class:`~.deferred_self_check.DeferredSelfCheck` a step at a time)."""

    model: torch.nn.Module
    candidates: tuple[Candidate, ...]
    cpu: CpuDescription
    folder: Path
    options: tuple[str, str]  # the precision and runtime asked for

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters(), torch.empty(0)).device

    def path(self, with_weights: bool) -> Path:
        """The decision's file: float32 decisions per architecture, bfloat16 ones per weights
        (see the module docstring)."""
        key = choice_key(self.model, self.device, self.cpu, self.options, with_weights)
        return self.folder / f"{key}.json"

    def stored(self) -> RuntimeChoice | None:
        """A decision measured earlier on this machine, or None. A decision keyed by the
        weights exists only where a half-precision candidate could have won, so only then is
        it looked for (hashing the weights costs ~80 ms, and a deferred check asks at every
        step)."""
        half = any(candidate.precision != "fp32" for candidate in self.candidates)
        for with_weights in (False, True) if half else (False,):
            cached = read_cached(self.path(with_weights))
            if cached is not None:
                return cached
        return None

    def baseline(self, how: str) -> RuntimeChoice:
        """Torch float32, e.g. while the check has not run (``how``: "not measured",
        "measuring")."""
        return RuntimeChoice(BASELINE.runtime, BASELINE.precision, how, cpu=self.cpu.summary())

    @property
    def graph_decoder(self) -> bool:
        model = self.model
        return isinstance(model, PromptableSegmenter) and has_graph_decoder(model)

    @property
    def settled(self) -> Callable[[Measured], bool]:
        """The early stop of :func:`measure` for this model (:func:`settled_by`)."""
        return settled_by(self.graph_decoder)

    def decide(self, measured: Measured) -> RuntimeChoice:
        """The choice ``measured`` leads to, stored for the next time."""
        seconds, rejected, box_seconds = measured
        chosen = pick(seconds, rejected)
        graph_decoder = self.graph_decoder
        choice = RuntimeChoice(
            chosen.runtime,
            chosen.precision,
            "measured",
            seconds,
            rejected,
            self.cpu.summary(),
            decoder=pick_decoder(box_seconds, rejected) if graph_decoder else "torch",
            box_seconds=box_seconds,
        )
        write_cached(self.path(with_weights=chosen.precision != "fp32"), choice)
        return choice


def plan_self_check(
    model: torch.nn.Module,
    precision: str = "auto",
    runtime: str = "auto",
    cpu: CpuDescription | None = None,
    onnx_installed: bool | None = None,
    choice_dir: Path | None = None,
    openvino_installed: bool | None = None,
) -> RuntimeChoice | SelfCheck:
    """The choice when ``precision`` and ``runtime`` leave one candidate, else the self-check
    that decides among them (its decision may be stored already: :meth:`SelfCheck.stored`).
    ``cpu``, ``onnx_installed``, ``openvino_installed`` and ``choice_dir`` default to this
    machine and the user cache folder; tests inject their own."""
    cpu = cpu if cpu is not None else describe_cpu()
    device = next(model.parameters(), torch.empty(0)).device  # no parameters: a CPU stand-in
    installed = onnx_available() if onnx_installed is None else onnx_installed
    if openvino_installed is None:
        openvino_installed = openvino_available()
    found = candidates_for(precision, runtime, device, cpu, installed, openvino_installed)
    if len(found) == 1:
        how = "only candidate" if precision == runtime == "auto" else "forced"
        return RuntimeChoice(found[0].runtime, found[0].precision, how, cpu=cpu.summary())
    folder = choice_dir if choice_dir is not None else default_choice_dir()
    return SelfCheck(model, tuple(found), cpu, folder, (precision, runtime))


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
    """Resolve ``precision`` and ``runtime`` (each "auto" or a forced value) for ``model``,
    running the self-check now if it is needed and not stored.

    ``make_predictor`` builds a predictor for a candidate (see :func:`measure`); None means
    "do not measure": with several candidates, torch fp32 is used (``how="not measured"``).
    ``cases`` defaults to the bundled samples; for the other arguments see
    :func:`plan_self_check`.
    """
    planned = plan_self_check(
        model, precision, runtime, cpu, onnx_installed, choice_dir, openvino_installed
    )
    if isinstance(planned, RuntimeChoice):
        return planned
    if make_predictor is None:
        return planned.baseline("not measured")
    if (cached := planned.stored()) is not None:
        return cached
    # One self-check of this model at a time: processes starting together (cluster workers,
    # test workers, two viewers) would measure each other's load; who waited reads the decision.
    with self_check_lock(planned.path(with_weights=False)):
        if (cached := planned.stored()) is not None:
            return cached
        measured = measure(planned.candidates, make_predictor, cases(), settled=planned.settled)
        return planned.decide(measured)
