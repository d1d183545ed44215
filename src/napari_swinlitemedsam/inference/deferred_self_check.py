"""The runtime self-check done a step at a time, while the predictor already works.

The first time a model is used on a machine, :func:`.runtime_choice.choose_runtime` measures
every candidate runtime before the predictor is returned: about 20 s on a 2-core laptop CPU,
mostly exporting the graphs and encoding the check slices with each runtime. An interactive
user should not wait for that before the first mask. ``BoxPredictor.from_pretrained(...,
self_check="later")`` returns a predictor on torch float32 at once (the reference every
candidate is checked against) with a :class:`DeferredSelfCheck` in its
``pending_self_check``; its owner calls :meth:`DeferredSelfCheck.step` between its own jobs
(the napari annotator: when no box, propagation or slice on screen is waiting), each step one
candidate's trial (about one encode), and the predictor switches to the decision the moment
it is made. The decision is stored like one made at once, so the next start reads it.

Steps and the owner's jobs must not run at the same time (the predictor is not thread-safe):
the owner runs both on one worker.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Sequence
from typing import TYPE_CHECKING

from napari_swinlitemedsam.inference.runtime_choice import RuntimeChoice, SelfCheck
from napari_swinlitemedsam.inference.runtime_choice_store import self_check_turn
from napari_swinlitemedsam.inference.self_check import (
    Candidate,
    CheckablePredictor,
    CheckCase,
    Measured,
    bundled_check_cases,
    measure_in_steps,
)

if TYPE_CHECKING:  # the predictor imports this module; only the type flows back
    from napari_swinlitemedsam.inference.predictor import BoxPredictor

LOCK_WAIT_S = 0.2  # a step waits this long for another process's check, then yields its turn


class DeferredSelfCheck:
    """The self-check of ``predictor`` (working on torch float32 meanwhile).

    Args:
        predictor: switched with ``run_as`` when the check decides.
        planned: the check to run (:func:`.runtime_choice.plan_self_check`).
        make_trial: builds the trial predictor of a candidate; ``tried`` holds those built,
            so that the winners' opened graph sessions go to ``predictor``.
        decoder_runtime: ``"auto"`` (the check's choice) or a forced box-decoder runtime.
        cases: the check slices (default: the bundled samples, read at the first step).
        clock: times the trials (tests: a fake one).
    """

    def __init__(
        self,
        predictor: BoxPredictor,
        planned: SelfCheck,
        make_trial: Callable[[Candidate], CheckablePredictor],
        tried: dict[Candidate, BoxPredictor],
        decoder_runtime: str = "auto",
        cases: Callable[[], Sequence[CheckCase]] = bundled_check_cases,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.predictor = predictor
        self.planned = planned
        self.decoder_runtime = decoder_runtime
        self.choice: RuntimeChoice | None = None
        self.steps_done = 0
        self._make_trial = make_trial
        self._tried = tried
        self._cases = cases
        self._clock = clock
        self._steps: Generator[str, None, Measured] | None = None

    @property
    def finished(self) -> bool:
        return self.choice is not None

    def step(self) -> bool:
        """Run one candidate's trial; once the check has decided (or another process stored
        its decision), switch the predictor to it. Returns whether the check is finished."""
        if self.choice is not None:
            return True
        with self_check_turn(self.planned.path(with_weights=False), LOCK_WAIT_S) as my_turn:
            if not my_turn:
                return False
            stored = self.planned.stored()
            if stored is not None:
                return self._finish(stored)
            if self._steps is None:
                self._steps = measure_in_steps(
                    self.planned.candidates,
                    self._make_trial,
                    self._cases(),
                    clock=self._clock,
                    settled=self.planned.settled,
                )
            try:
                next(self._steps)
            except StopIteration as measured:
                return self._finish(self.planned.decide(measured.value))
            except Exception:
                # torch float32 itself failed: the predictor stays on it, the owner reports it
                self._finish(self.planned.baseline("not measured"))
                raise
            self.steps_done += 1
            return False

    def run_to_end(self) -> RuntimeChoice:
        """Every remaining step now (for scripts and tests)."""
        while not self.step():
            pass
        assert self.choice is not None
        return self.choice

    def _finish(self, choice: RuntimeChoice) -> bool:
        decoder = choice.decoder if self.decoder_runtime == "auto" else self.decoder_runtime
        self.predictor.run_as(choice, decoder)
        self.predictor.adopt_graph_sessions(
            self._tried.get(Candidate(choice.runtime, choice.precision)),
            self._tried.get(Candidate(decoder, "fp32")),
        )
        self._tried.clear()  # the trial predictors and their check slices go
        self._steps = None
        self.predictor.pending_self_check = None
        self.choice = choice
        return True
