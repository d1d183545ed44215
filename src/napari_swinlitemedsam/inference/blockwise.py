"""Whole-array statistics and element-wise mappings in blocks, with bounded extra memory.

A large stack (e.g. 300 x 512 x 512 float32, 300 MB) should not need several float64 copies of
itself to be brought to uint8. :class:`Blocks` walks an array of any shape in flat blocks of
:data:`BLOCK_VALUES` values, each converted to float64 with non-finite values replaced;
:func:`percentile` finds exact percentiles of a subset of the values (numpy's default "linear"
method, bit for bit) by narrowing histograms and sorting only the few values near the wanted
ranks. Extra memory is a few blocks, whatever the array's size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

BLOCK_VALUES = 1 << 20  # 8 MB of float64 per block
_BINS = 4096  # histogram bins per narrowing pass
_GATHER_LIMIT = 1 << 20  # values near a rank sorted directly once this few are left


@dataclass(frozen=True)
class FiniteStats:
    """Of the finite values: smallest, largest, whether any value was NaN or infinite."""

    low: float
    high: float
    has_non_finite: bool


class Blocks:
    """Flat float64 blocks of ``image`` (any shape, real dtype), non-finite values replaced by
    ``fill`` (None: left as they are)."""

    def __init__(
        self, image: np.ndarray, fill: float | None = None, block_values: int | None = None
    ) -> None:
        self.flat = np.ascontiguousarray(image).reshape(-1)
        self.fill = fill
        self.block_values = block_values or BLOCK_VALUES
        self.size = self.flat.size

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        """``(start, block)``: flat values ``start:start + len(block)`` as float64."""
        floating = np.issubdtype(self.flat.dtype, np.floating)
        for start in range(0, self.size, self.block_values):
            block = self.flat[start : start + self.block_values].astype(np.float64)
            if floating and self.fill is not None:
                block[~np.isfinite(block)] = self.fill
            yield start, block

    def map_to_uint8(
        self, shape: tuple[int, ...], mapping: Callable[[np.ndarray], np.ndarray]
    ) -> np.ndarray:
        """``mapping`` (float64 block -> uint8 block, element-wise) over the whole array."""
        out = np.empty(self.size, dtype=np.uint8)
        for start, block in self:
            out[start : start + block.size] = mapping(block)
        return out.reshape(shape)


def finite_stats(image: np.ndarray, block_values: int | None = None) -> FiniteStats | None:
    """Smallest and largest finite value of ``image``; None when no value is finite."""
    low, high, non_finite = math.inf, -math.inf, False
    for _, block in Blocks(image, None, block_values):
        finite = np.isfinite(block)
        if not finite.all():
            non_finite = True
            block = block[finite]
        if block.size:
            low, high = min(low, float(block.min())), max(high, float(block.max()))
    if low > high:
        return None
    return FiniteStats(low, high, non_finite)


def percentile(
    blocks: Blocks,
    keep: Callable[[np.ndarray], np.ndarray] | None,
    percent: float,
    count: int,
    low: float,
    high: float,
) -> float:
    """The ``percent`` percentile of the kept values, exactly as ``np.percentile`` gives it on
    them (method "linear").

    ``keep(block)``: bool mask of the values that belong to the sample, or None for all.
    ``count``, ``low``, ``high``: how many values are kept, their smallest and largest.
    """
    if count < 1:
        raise ValueError("the sample is empty")
    quantile = np.float64(percent) / np.float64(100)
    virtual = (count - 1) * quantile  # numpy's "linear" method
    previous = math.floor(virtual)
    if virtual >= count - 1:
        previous = following = count - 1
    elif virtual < 0:
        previous = following = 0
    else:
        following = previous + 1
    gamma = np.float64(virtual - np.float64(previous))
    a, b = _values_at_ranks(blocks, keep, previous, following, low, high)
    a, b = np.float64(a), np.float64(b)
    difference = b - a
    if gamma >= 0.5:
        return float(b - difference * (1 - gamma))
    return float(a + difference * gamma)


def _values_at_ranks(
    blocks, keep, first: int, last: int, low: float, high: float, below: int = 0
) -> list[float]:
    """The kept values of 0-based sorted ranks ``first`` and ``last`` (``last - first`` <= 1),
    searched among the kept values in [low, high]; ``below`` kept values are smaller than low."""
    while True:
        if low == high:
            return [low, low]
        counts = np.zeros(_BINS, dtype=np.int64)
        for _, block in blocks:
            values = _in_range(block, keep, low, high)
            counts += np.bincount(_bin_of(values, low, high), minlength=_BINS)
        cumulative = np.cumsum(counts)
        bin_first = int(np.searchsorted(cumulative, first - below, side="right"))
        bin_last = int(np.searchsorted(cumulative, last - below, side="right"))
        if bin_first != bin_last:  # in two bins: each rank on its own
            return [
                _values_at_ranks(blocks, keep, first, first, low, high, below)[0],
                _values_at_ranks(blocks, keep, last, last, low, high, below)[0],
            ]
        before = below + (int(cumulative[bin_first - 1]) if bin_first else 0)
        gathered, new_low, new_high = [], math.inf, -math.inf
        small = counts[bin_first] <= _GATHER_LIMIT
        for _, block in blocks:
            values = _in_range(block, keep, low, high)
            values = values[_bin_of(values, low, high) == bin_first]
            if small:
                gathered.append(values)
            elif values.size:
                new_low, new_high = (
                    min(new_low, float(values.min())),
                    max(new_high, float(values.max())),
                )
        if small:
            ordered = np.sort(np.concatenate(gathered))
            return [float(ordered[first - before]), float(ordered[last - before])]
        low, high, below = new_low, new_high, before


def _in_range(block: np.ndarray, keep, low: float, high: float) -> np.ndarray:
    mask = (block >= low) & (block <= high)
    if keep is not None:
        kept = keep(block)
        if kept is not None:
            mask &= kept
    return block[mask]


def _bin_of(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Histogram bin of each value in [low, high]: non-decreasing in the value (rounding is
    monotonic), computed on halves so that ``high - low`` never overflows."""
    span = high / 2 - low / 2
    position = (values / 2 - low / 2) / span if span > 0 else (values - low) / (high - low)
    return np.minimum((position * _BINS).astype(np.int64), _BINS - 1)
