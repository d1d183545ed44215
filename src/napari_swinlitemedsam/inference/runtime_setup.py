"""Which runtime and precision a freshly loaded predictor runs, decided by measurement.

:meth:`BoxPredictor.from_pretrained` hands its loaded model here: the self-check of
:mod:`.runtime_choice` builds one trial predictor per candidate (torch fp32, ONNX Runtime, bf16
where native), and the winners' already opened graph sessions (the encoder's and the box
decoder's, which may be on two runtimes) are kept for the final predictor, so no graph is
loaded twice. Kept apart from :mod:`.predictor` so that the predictor module is
only the encode/decode engine.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari_swinlitemedsam.inference.deferred_self_check import DeferredSelfCheck
from napari_swinlitemedsam.inference.heap_reuse import keep_freed_buffers
from napari_swinlitemedsam.inference.runtime_choice import (
    Candidate,
    EmulatedBf16Warning,
    RuntimeChoice,
    SelfCheck,
    choose_runtime,
    emulated_bf16_message,
    plan_self_check,
)
from napari_swinlitemedsam.model.segmenter import PromptableSegmenter

if TYPE_CHECKING:  # the predictor imports this module; only the type flows back
    from napari_swinlitemedsam.inference.predictor import BoxPredictor

SELF_CHECK_OPTIONS = ("now", "later")


def warn_if_bf16_is_emulated(model_name: str, stacklevel: int = 3) -> None:
    """Warn (:class:`EmulatedBf16Warning`) when this CPU has no native bfloat16."""
    from napari_swinlitemedsam.inference.cpu_features import describe_cpu

    cpu = describe_cpu()
    if cpu.native_bf16 is not True:
        warnings.warn(
            emulated_bf16_message(model_name, cpu), EmulatedBf16Warning, stacklevel=stacklevel
        )


def build_measured(
    predictor_class: type[BoxPredictor],
    model: PromptableSegmenter,
    prompts: str,
    name: str,
    cache: Any,
    precision: str = "auto",
    runtime: str = "auto",
    choice_dir: Path | None = None,
    self_check: str = "now",
    **options,
) -> BoxPredictor:
    """A ``predictor_class`` around ``model`` running the measured (or forced) choice.

    ``precision``/``runtime`` "auto" are resolved by :func:`.runtime_choice.choose_runtime`
    (a self-check the first time, the cached decision afterwards); a forced value is kept, a
    forced ``decoder_runtime`` among the ``options`` too. ``options`` go to the predictor's
    constructor. ``self_check``: ``"now"`` (measure before returning) or ``"later"``: when
    a check is needed and not stored, the predictor starts on torch float32 and its
    ``pending_self_check`` runs the check a step at a time (:mod:`.deferred_self_check`).
    For a CPU model the process keeps freed tensor buffers for reuse first (:mod:`.heap_reuse`).
    """
    if self_check not in SELF_CHECK_OPTIONS:
        raise ValueError(f"self_check must be one of {SELF_CHECK_OPTIONS}, got {self_check!r}")
    if model.device.type == "cpu":
        keep_freed_buffers()  # before any measuring: torch's CPU encode depends on it
    forced_decoder = options.pop("decoder_runtime", "auto")
    tried: dict[Candidate, BoxPredictor] = {}

    def make(candidate: Candidate) -> BoxPredictor:
        tried[candidate] = predictor_class(
            model, prompts, None, name, precision=candidate.precision, runtime=candidate.runtime
        )
        return tried[candidate]

    if self_check == "later":
        planned = plan_self_check(model, precision, runtime, choice_dir=choice_dir)
        if isinstance(planned, SelfCheck) and planned.stored() is None:
            predictor = predictor_class(
                model, prompts, cache, name, precision="fp32", runtime="torch", **options
            )
            torch_decoder = "torch" if forced_decoder == "auto" else forced_decoder
            predictor.run_as(planned.baseline("measuring"), torch_decoder)
            predictor.pending_self_check = DeferredSelfCheck(
                predictor, planned, make, tried, forced_decoder
            )
            return predictor

    choice: RuntimeChoice = choose_runtime(model, make, precision, runtime, choice_dir=choice_dir)
    decoder = choice.decoder if forced_decoder == "auto" else forced_decoder
    predictor = predictor_class(
        model,
        prompts,
        cache,
        name,
        precision=choice.precision if precision == "auto" else precision,
        runtime=choice.runtime if runtime == "auto" else runtime,
        decoder_runtime=decoder,
        **options,
    )
    predictor.runtime_choice = choice
    # keep the graph sessions the self-check already opened
    predictor.adopt_graph_sessions(
        tried.get(Candidate(choice.runtime, choice.precision)),
        tried.get(Candidate(decoder, "fp32")),
    )
    return predictor
