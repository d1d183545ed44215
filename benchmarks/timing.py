"""Timing helpers for the benchmarks: repeated, interleaved wall-clock measurements.

The benchmarks run on shared, noisy machines. Three habits keep the figures honest:

* every figure is the median of several repetitions, reported with its minimum and the
  spread (interquartile range over median), so the noise is visible next to the number;
* variants that are compared with each other are measured *interleaved* (A, B, A, B, ...),
  so that a burst of load from another process hits both sides alike and the ratio of the
  medians stays meaningful even when the absolute figures drift;
* the matrix-multiply rate that serves as the "floor" is measured in the same run, the same
  way, right next to the thing it is compared with.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class Timing:
    """Wall-clock seconds of repeated runs of one thing."""

    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def minimum(self) -> float:
        return min(self.samples)

    @property
    def spread(self) -> float:
        """Interquartile range over the median (0.1 = the middle half lies within 10 %)."""
        if len(self.samples) < 4:
            return (max(self.samples) - min(self.samples)) / self.median
        quartiles = statistics.quantiles(self.samples, n=4)
        return (quartiles[2] - quartiles[0]) / self.median

    def scaled(self, factor: float) -> Timing:
        """Every sample times ``factor`` (e.g. 1 / boxes for a per-box figure)."""
        return Timing(tuple(s * factor for s in self.samples))

    def __str__(self) -> str:
        return f"{fmt_seconds(self.median)} (min {fmt_seconds(self.minimum)}, ±{self.spread:.0%})"


def fmt_seconds(seconds: float) -> str:
    """Seconds in the unit that reads best: '812 ms', '2.41 s', '35 µs'."""
    if seconds >= 1.0:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.0f} ms" if seconds >= 0.1 else f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.0f} µs"


def measure(fn: Callable[[], object], repeats: int, warmup: int = 1) -> Timing:
    """Run ``fn`` ``warmup`` times untimed, then ``repeats`` times timed."""
    return measure_interleaved({"only": fn}, repeats, warmup)["only"]


def measure_interleaved(
    fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1
) -> dict[str, Timing]:
    """Time several variants in rounds (each round runs every variant once, in order).

    Returns one :class:`Timing` per name. Interleaving makes the ratios between variants robust
    to load that comes and goes on a shared machine.
    """
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return {name: Timing(tuple(values)) for name, values in samples.items()}


def matmul_flops(size: int) -> int:
    """FLOPs of one (size x size) @ (size x size) product, a multiply-add counted as 2."""
    return 2 * size**3


def matmul_operands(
    size: int, dtype: torch.dtype, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two seeded random (size, size) matrices in ``dtype``."""
    generator = torch.Generator().manual_seed(seed)
    a = torch.randn(size, size, generator=generator).to(dtype)
    b = torch.randn(size, size, generator=generator).to(dtype)
    return a, b


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of ``fn`` by torch's FLOP counter (multiply-add = 2).

    Attention runs on the math backend while counting: the counter sees its matrix products
    there, whereas the fused CPU kernel used for inference is invisible to it.
    """
    counter = FlopCounterMode(display=False)
    with sdpa_kernel(SDPBackend.MATH), counter:
        fn()
    return counter.get_total_flops()


def with_threads(threads: int, fn: Callable[[], object]) -> Callable[[], object]:
    """``fn`` run with ``torch.set_num_threads(threads)``, restoring the previous setting after."""

    def run() -> object:
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return fn()
        finally:
            torch.set_num_threads(previous)

    return run
