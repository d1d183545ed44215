"""The benchmark suite's short mode runs, and its fast paths give the reference-style masks.

Nothing here asserts a speed: the checks are that every section produces its figures, that our
pipeline and decoder give the labels and masks of the reference-style schedule built from the
same model (within float32 rounding, see ``MIN_OBJECT_DSC``), and that the bf16 /
float16-cache paths stay close to float32.

The quick run encodes a few dozen slices (bf16 only where the CPU has it natively: emulated,
one encode costs ~20 float32 ones), so every test that reads it is in the ``slow`` tier.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

BENCH_DIR = Path(__file__).resolve().parents[2] / "benchmarks"

# Our schedule decodes all boxes of a slice in one call, the reference style one box per call.
# Same arithmetic, other summation order inside the matrix products (the blocking depends on
# the batch and on the CPU's kernels): logits differ by float32 rounding, ~1e-6 of their range,
# so only pixels whose logit is that close to 0 can flip (on an AVX2-only AMD EPYC, 1 pixel of
# the 16 Swin-LiteMedSAM masks did: lowest DSC 0.99999; elsewhere none). One flipped pixel
# costs a 250-pixel nucleus 0.002 of DSC; a real schedule defect (box off by a few pixels,
# prompts of another box, another slice's skip features) costs several hundredths. 0.99 lies
# between the two.
MIN_OBJECT_DSC = 0.99


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


@pytest.mark.slow
def test_every_section_reports(quick_run, bench):
    rows, figures = quick_run
    sections = {row.section.split()[0] for row in rows}
    assert {"1", "2", "3", "3b", "4", "5", "6", "accuracy"} <= sections
    table = bench.markdown_table(rows)
    assert table.count("\n") == len(rows) + 1
    native_bf16 = bool(figures["machine"]["native_bf16"])
    for name in ("swin-litemedsam", "litemedsam"):
        encoder = figures["encoder"][name]
        assert encoder["fp32"] > 0
        assert ("bf16" in encoder) == native_bf16 and encoder.get("bf16", 1) > 0
        assert figures["encoder"]["flops"][name] > 50e9  # both encoders are 75-105 GFLOPs
        # start-up: a fresh process's first mask, then a second image and later boxes in it
        startup = figures["startup"]
        assert startup[f"{name} warm first mask"] > 0 and startup[f"{name} later box"] > 0


@pytest.mark.slow
def test_decoder_masks_agree_with_reference_style(quick_run):
    _, figures = quick_run
    for name in ("swin-litemedsam", "litemedsam"):
        agreement = figures["decode"][name]["agreement"]
        assert agreement["min_object_dsc"] >= MIN_OBJECT_DSC, (name, agreement)
    # the box-only decoder (LiteMedSAM) also runs on ONNX Runtime, with the same masks as torch
    on_graph = figures["decode"]["litemedsam"]["onnxruntime agreement"]
    assert on_graph["min_object_dsc"] >= MIN_OBJECT_DSC, on_graph
    assert "onnxruntime agreement" not in figures["decode"]["swin-litemedsam"]


@pytest.mark.slow
def test_volume_labels_agree_with_reference_style(quick_run):
    _, figures = quick_run
    for name in ("swin-litemedsam", "litemedsam"):
        volume = figures["volume"][name]
        # a flipped pixel may move the box carried to the next slice by one pixel: same floor
        assert volume["agreement"]["min_object_dsc"] >= MIN_OBJECT_DSC, (name, volume)
        # two objects on every slice of the short stack: reference re-encodes per object
        assert volume["encodes_reference"] == 2 * volume["encodes_ours"]


@pytest.mark.slow
def test_fast_paths_stay_close_to_fp32(quick_run):
    _, figures = quick_run
    native_bf16 = figures["machine"]["native_bf16"]
    lite = figures["accuracy"]["litemedsam nuclei2d"]
    for name in ("swin-litemedsam", "litemedsam"):
        # quick mode runs bf16 only where bfloat16 is native (see run_benchmarks)
        accuracy = figures["accuracy"][f"{name} nuclei2d"]
        assert ("bf16" in figures["volume"][name]) == bool(native_bf16)
        assert ("bf16 encoder" in accuracy) == bool(native_bf16)
        if native_bf16:
            assert figures["volume"][name]["bf16"]["agreement"] > 0.9
            assert accuracy["bf16 encoder"]["agreement"] > 0.9
            assert abs(lite["bf16 encoder"]["dsc_change"]) < 0.05
    assert lite["fp16 cached features"]["agreement"] > 0.99


@pytest.mark.slow
def test_memory_probe_stays_within_cache_budget(quick_run):
    _, figures = quick_run
    (result,) = figures["memory"].values()
    assert 0 < result["cache_bytes"] <= result["cache_budget_bytes"]
    assert result["peak_rss"] >= result["rss_after_model"] > 0


@pytest.mark.slow
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
    # Two formulations of the same attention: float32 rounding differs, ~2e-6 of the output
    # range measured on an AVX2 CPU; the bound leaves 10x for other kernels.
    scale = float(plain.abs().max())
    np.testing.assert_allclose(ours.numpy(), plain.numpy(), rtol=0, atol=2.5e-5 * scale)
    assert torch.equal(ours, again)  # the plain formulation is gone after the block


@pytest.mark.slow
def test_pipelined_labels_agree_with_reference_style(quick_run):
    _, figures = quick_run
    assert "bf16" in figures["machine"]["cpu_flags"]  # the table says whether bf16 is native
    assert set(figures["pipeline"]) == {"cpu", "litemedsam"}  # quick mode: the default model
    for name in ("litemedsam",):
        variants = figures["pipeline"][name]
        assert {"one encode per slice", "pipelined", "pipelined, 2 slices per encode"} <= set(
            variants
        )
        # quick mode: compared with the one encode per slice schedule, which the volume
        # section compares with the reference style
        for label, numbers in variants.items():
            assert numbers["compared_with"] == "one encode per slice"
            assert numbers["min_object_dsc"] >= MIN_OBJECT_DSC, (name, label, numbers)
        assert "reference-style" not in variants
