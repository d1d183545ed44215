"""The benchmark suite's short mode runs, and its fast paths give the reference-style masks.

Nothing here asserts a speed: the checks are that every section produces its figures, that our
pipeline and decoder give exactly the labels and masks of the reference-style schedule built
from the same model, and that the bf16 / float16-cache paths stay close to float32.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

BENCH_DIR = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH_DIR))
    try:
        yield importlib.import_module("run_benchmarks")
    finally:
        sys.path.remove(str(BENCH_DIR))


@pytest.fixture(scope="module")
def quick_run(bench):
    return bench.run(quick=True)


def test_every_section_reports(quick_run, bench):
    rows, figures = quick_run
    sections = {row.section.split()[0] for row in rows}
    assert {"1", "2", "3", "4", "5", "6", "accuracy"} <= sections
    table = bench.markdown_table(rows)
    assert table.count("\n") == len(rows) + 1
    for name in ("swin-litemedsam", "litemedsam"):
        encoder = figures["encoder"][name]
        assert encoder["fp32"] > 0 and encoder["bf16"] > 0
        assert figures["encoder"]["flops"][name] > 50e9  # both encoders are 75-105 GFLOPs


def test_decoder_masks_equal_reference_style(quick_run):
    _, figures = quick_run
    for name in ("swin-litemedsam", "litemedsam"):
        assert figures["decode"][name]["masks_equal"] is True


def test_volume_labels_equal_reference_style(quick_run):
    _, figures = quick_run
    for name in ("swin-litemedsam", "litemedsam"):
        volume = figures["volume"][name]
        assert volume["masks_equal"] is True
        # three objects on every slice of the short stack: reference re-encodes per object
        assert volume["encodes_reference"] == 3 * volume["encodes_ours"]


def test_fast_paths_stay_close_to_fp32(quick_run):
    _, figures = quick_run
    for name in ("swin-litemedsam", "litemedsam"):
        assert figures["volume"][name]["bf16"]["agreement"] > 0.9
    lite = figures["accuracy"]["litemedsam nuclei2d"]
    assert abs(lite["bf16 encoder"]["dsc_change"]) < 0.05
    assert lite["fp16 cached features"]["agreement"] > 0.99


def test_memory_probe_stays_within_cache_budget(quick_run):
    _, figures = quick_run
    (result,) = figures["memory"].values()
    assert 0 < result["cache_bytes"] <= result["cache_budget_bytes"]
    assert result["peak_rss"] >= result["rss_after_model"] > 0


def test_reference_style_attention_matches_ours(bench):
    from napari_swinlitemedsam.model.registry import build_swin_litemedsam
    from reference_style import plain_attention

    model = build_swin_litemedsam().eval()
    images = torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ours = model.image_encoder(images)[0]
        with plain_attention(model):
            plain = model.image_encoder(images)[0]
        again = model.image_encoder(images)[0]
    np.testing.assert_allclose(ours.numpy(), plain.numpy(), atol=1e-4)
    assert torch.equal(ours, again)  # the plain formulation is gone after the block
