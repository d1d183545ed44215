"""The benchmark suite's short mode, per-slice sections: encoder, decode, start-up, accuracy and
the peer model run, and our decoder gives the reference-style masks.

Nothing here asserts a speed: the checks are that every section produces its figures, that our
batched decoder gives the masks of the reference-style one-box calls of the same model (within
float32 rounding, ``tolerances.MIN_OBJECT_DSC``) and that the bf16 / float16-cache paths stay
close to float32. The volume sections are in ``test_quick_run_volumes.py``: the two files run
on both workers at once (each is minutes of real encodes on one thread).

bf16 runs only where the CPU has it natively (emulated, one encode costs ~20 float32 ones), so
every test that reads the run is in the ``slow`` tier.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tolerances import MIN_OBJECT_DSC

SECTIONS = ("encoder", "decode", "startup", "accuracy", "peer")


@pytest.fixture(scope="module")
def quick_run(bench):
    return bench.run(quick=True, sections=SECTIONS)


@pytest.mark.slow
def test_every_section_reports(quick_run, bench):
    rows, figures = quick_run
    assert {row.section.split()[0] for row in rows} == {"1", "2", "4", "6", "accuracy"}
    table = bench.markdown_table(rows)
    assert table.count("\n") == len(rows) + 1
    assert "bf16" in figures["machine"]["cpu_flags"]  # the table says whether bf16 is native
    native_bf16 = bool(figures["machine"]["native_bf16"])
    for name in ("swin-litemedsam", "litemedsam"):
        encoder = figures["encoder"][name]
        assert encoder["fp32"] > 0
        assert ("bf16" in encoder) == native_bf16 and encoder.get("bf16", 1) > 0
        assert figures["encoder"]["flops"][name] > 50e9  # both encoders are 75-105 GFLOPs
        # start-up: a fresh process's first mask, then a second image and later boxes in it
        startup = figures["startup"]
        assert startup[f"{name} warm first mask"] > 0 and startup[f"{name} later box"] > 0
    assert figures["peer"]["fp32_s"] > 0


@pytest.mark.slow
def test_decoder_masks_agree_with_reference_style(quick_run):
    _, figures = quick_run
    for name in ("swin-litemedsam", "litemedsam"):
        agreement = figures["decode"][name]["agreement"]
        assert agreement["min_object_dsc"] >= MIN_OBJECT_DSC, (name, agreement)
    # both decoders also run on ONNX Runtime, with the same masks as torch
    for name in ("swin-litemedsam", "litemedsam"):
        on_graph = figures["decode"][name]["onnxruntime agreement"]
        assert on_graph["min_object_dsc"] >= MIN_OBJECT_DSC, (name, on_graph)


@pytest.mark.slow
def test_fast_paths_stay_close_to_fp32(quick_run):
    _, figures = quick_run
    native_bf16 = figures["machine"]["native_bf16"]
    lite = figures["accuracy"]["litemedsam nuclei2d"]
    for name in ("swin-litemedsam", "litemedsam"):
        # quick mode runs bf16 only where bfloat16 is native (see run_benchmarks)
        accuracy = figures["accuracy"][f"{name} nuclei2d"]
        assert ("bf16 encoder" in accuracy) == bool(native_bf16)
        if native_bf16:
            assert accuracy["bf16 encoder"]["agreement"] > 0.9
            assert abs(lite["bf16 encoder"]["dsc_change"]) < 0.05
    assert lite["fp16 cached features"]["agreement"] > 0.99


@pytest.mark.slow
def test_reference_style_attention_matches_ours(bench):
    from napari_swinlitemedsam.model.registry import build_swin_litemedsam
    from reference_style import plain_attention

    model = build_swin_litemedsam().eval()
    images = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(1))
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
