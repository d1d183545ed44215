"""Progress generators: long work yields progress and returns its result; these drive them.

Every long computation of the package (propagating through a volume, segmenting a case,
fine-tuning) is a generator that yields progress values and returns the result, so that the
caller chooses how to show progress (a tqdm bar, a napari worker, nothing). The two ways of
consuming one live here, instead of a ``while True: next(...)`` loop at each caller.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, TypeVar

Step = TypeVar("Step")
Shown = TypeVar("Shown")
Result = TypeVar("Result")


def run_to_end(
    generator: Generator[Step, Any, Result], on_step: Callable[[Step], None] | None = None
) -> Result:
    """Exhaust ``generator`` (calling ``on_step`` with each yielded value); return its result."""
    while True:
        try:
            step = next(generator)
        except StopIteration as finished:
            return finished.value
        if on_step is not None:
            on_step(step)


def relay(
    generator: Generator[Step, Any, Result], transform: Callable[[Step], Shown]
) -> Generator[Shown, None, Result]:
    """Yield ``transform(step)`` for each step of ``generator``; return its result."""
    while True:
        try:
            step = next(generator)
        except StopIteration as finished:
            return finished.value
        yield transform(step)
