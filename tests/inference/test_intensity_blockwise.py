"""The block-wise uint8 mapping gives exactly what the whole-array mapping gave, with bounded memory."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from napari_swinlitemedsam.inference import blockwise, intensity


def whole_array_to_uint8(image: np.ndarray) -> np.ndarray:
    """The mapping as it was computed before it went block-wise (float64 copies of the image),
    kept here as the reference: ``modality="auto"``, no window, non-uint8 input."""
    values = image.astype(np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(image.shape, np.uint8)
    values[~finite] = values[finite].min()
    if float(values.min()) <= intensity.CT_AIR_THRESHOLD:
        low, high = intensity.window_bounds(None)
        return ((np.clip(values, low, high) - low) / (high - low) * 255.0).astype(np.uint8)
    positive = values[values > 0]
    sample = positive if positive.size else values.ravel()
    low, high = np.percentile(sample, 0.5), np.percentile(sample, 99.5)
    clipped = np.clip(values, low, high)
    smallest, largest = clipped.min(), clipped.max()
    if largest > smallest:
        scaled = (clipped - smallest) / (largest - smallest) * 255.0
    else:
        scaled = np.full(values.shape, 255.0)
    scaled[values == 0] = 0
    return scaled.astype(np.uint8)


def volumes():
    rng = np.random.default_rng(7)
    gamma = rng.gamma(2.0, 300.0, (9, 31, 29)).astype(np.float32)
    with_holes = gamma.copy()
    with_holes[0, :3] = np.nan
    with_holes[1, 0, :4] = np.inf
    with_holes[2, 2, 2] = -np.inf
    ties = rng.integers(0, 6, (7, 40, 33)).astype(np.int16)  # many equal values
    mostly_zero = np.zeros((5, 20, 20), np.float64)
    mostly_zero[2, 3:6, 4:9] = rng.normal(5.0, 1.0, (3, 5))
    return {
        "gamma float32": gamma,
        "nan and inf": with_holes,
        "integer ties": ties,
        "all negative": -gamma.astype(np.float64) / 10,
        "ct": rng.normal(0.0, 600.0, (4, 30, 30)),
        "constant": np.full((3, 8, 8), 7.5),
        "mostly zero": mostly_zero,
        "one value": np.array([[3.0]]),
        "huge range": np.array([-1e308, 1e308, 0.5, 2.0, 1e300, 3e307] * 50).reshape(15, 20),
        "tiny values": rng.uniform(0, 1e-310, (6, 50)),
        "uint16 image": rng.integers(0, 4000, (64, 80)).astype(np.uint16),
    }


@pytest.mark.parametrize("name", list(volumes()))
def test_block_wise_mapping_equals_the_whole_array_mapping(name, monkeypatch):
    image = volumes()[name]
    expected = whole_array_to_uint8(image)
    assert np.array_equal(intensity.to_uint8(image), expected)
    # Tiny blocks, few bins and a small gather limit force many blocks and narrowing passes.
    monkeypatch.setattr(blockwise, "BLOCK_VALUES", 97)
    monkeypatch.setattr(blockwise, "_BINS", 3)
    monkeypatch.setattr(blockwise, "_GATHER_LIMIT", 5)
    assert np.array_equal(intensity.to_uint8(image), expected)


def test_percentiles_equal_numpy_for_many_sample_sizes(monkeypatch):
    monkeypatch.setattr(blockwise, "_GATHER_LIMIT", 3)
    monkeypatch.setattr(blockwise, "_BINS", 4)
    rng = np.random.default_rng(3)
    for size in list(range(1, 40)) + [101, 257, 1000, 4099]:
        values = rng.standard_exponential(size) * 100
        blocks = blockwise.Blocks(values, block_values=17)
        for percent in (0.0, 0.5, 25.0, 50.0, 99.5, 100.0):
            got = blockwise.percentile(blocks, None, percent, size, values.min(), values.max())
            assert got == np.percentile(values, percent), (size, percent)


def test_extra_memory_stays_bounded_on_a_large_stack():
    image = np.random.default_rng(0).gamma(2.0, 300.0, (40, 256, 256)).astype(np.float32)  # 10 MB
    tracemalloc.start()
    try:
        mapped = intensity.to_uint8(image)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The uint8 result (2.6 MB) plus a few 8 MB float64 blocks; the whole-array mapping needed
    # several float64 copies of the stack (21 MB each).
    assert peak < mapped.nbytes + 6 * blockwise.BLOCK_VALUES * 8
    assert peak < 3 * image.astype(np.float64).nbytes
