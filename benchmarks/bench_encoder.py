"""Section 1: encoder latency per slice against the matrix-multiply floor measured in the same run.

For each model the variants (float32, bfloat16 autocast, one thread, ONNX Runtime when it is
installed, and for Swin-LiteMedSAM the plain attention formulation) run interleaved with a
float32 and a bfloat16 matrix product of two large square matrices. The "floor" of a variant is
its FLOP count (torch's counter on our own model) divided by the matrix-product rate of its
precision: the time the encoder would take if every FLOP ran at matmul speed. ``x floor`` is
latency / floor.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from napari_swinlitemedsam.inference.onnx_encoder import OnnxEncoder, onnx_available
from napari_swinlitemedsam.inference.precision import encoder_context, encoder_input
from napari_swinlitemedsam.model.segmenter import PromptableSegmenter
from reference_style import plain_attention
from report import Row
from timing import (
    Timing,
    count_flops,
    fmt_seconds,
    matmul_flops,
    matmul_operands,
    measure_interleaved,
    with_threads,
)

SECTION = "1 encoder"


def encode_fn(model: PromptableSegmenter, images: torch.Tensor, precision: str = "fp32"):
    """A no-argument callable running ``model.encode`` (image encoder + skip neck) once,
    the way ``BoxPredictor`` runs it under ``precision``."""
    device = images.device
    prepared = encoder_input(images, precision)

    def run() -> None:
        with torch.inference_mode(), encoder_context(precision, device):
            model.encode(prepared)

    return run


def plain_encode_fn(model: PromptableSegmenter, images: torch.Tensor):
    def run() -> None:
        with plain_attention(model), torch.inference_mode():
            model.encode(images)

    return run


def onnx_encode_fn(model: PromptableSegmenter, name: str, images: torch.Tensor):
    """The encoder step on ONNX Runtime (``BoxPredictor(runtime="onnxruntime")``'s backend),
    and the largest absolute difference of its outputs from torch's float32 outputs."""
    with tempfile.TemporaryDirectory() as folder:
        encoder = OnnxEncoder(model, name, export_dir=Path(folder))
    ours = encoder.encode(images).tensors()
    with torch.inference_mode():
        reference = model.encode(images)[0].tensors()
    difference = max(float((ours[k] - reference[k]).abs().max()) for k in reference)
    return (lambda: encoder.encode(images)), difference


def matmul_fn(size: int, dtype: torch.dtype, products: int):
    a, b = matmul_operands(size, dtype)

    def run() -> None:
        with torch.inference_mode():
            for _ in range(products):
                torch.matmul(a, b)

    return run


def encoder_section(
    models: dict[str, PromptableSegmenter],
    repeats: int,
    matmul_size: int = 2048,
    with_onnx: bool = True,
    warmup: int = 1,
    with_bf16: bool = True,
) -> tuple[list[Row], dict]:
    """Rows for section 1 and the raw figures (``{"matmul": ..., model: {...}}``).

    ``with_onnx``: also time ONNX Runtime (when installed) on the exported encoder.
    ``with_bf16``: also time bfloat16 autocast (the quick mode leaves it out where the CPU
    emulates bfloat16: one emulated encode costs ~20 float32 ones).
    """
    images = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    products = {torch.float32: 2, torch.bfloat16: 8}
    fns = {"matmul fp32": matmul_fn(matmul_size, torch.float32, products[torch.float32])}
    if with_bf16:
        fns["matmul bf16"] = matmul_fn(matmul_size, torch.bfloat16, products[torch.bfloat16])
    flops, onnx_difference = {}, {}
    for name, model in models.items():
        flops[name] = count_flops(encode_fn(model, images))
        fns[f"{name} fp32"] = encode_fn(model, images)
        if with_bf16:
            fns[f"{name} bf16"] = encode_fn(model, images, "bf16")
        fns[f"{name} fp32 1 thread"] = with_threads(1, encode_fn(model, images))
        if model.uses_skips:
            fns[f"{name} fp32 plain attention"] = plain_encode_fn(model, images)
        if with_onnx and onnx_available():
            run, onnx_difference[name] = onnx_encode_fn(model, name, images)
            fns[f"{name} fp32 onnxruntime"] = run
    timings = measure_interleaved(fns, repeats, warmup)
    rate = {
        precision: products[dtype]
        * matmul_flops(matmul_size)
        / timings[f"matmul {precision}"].median
        for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))
        if f"matmul {precision}" in timings
    }
    rows = [
        Row(
            SECTION,
            f"matmul {matmul_size}² fp32",
            f"{rate['fp32'] / 1e9:.0f} GFLOP/s",
            f"torch.matmul, {torch.get_num_threads()} threads, {timings['matmul fp32']} per "
            f"{products[torch.float32]} products",
            {"flops_per_s": rate["fp32"]},
        ),
    ]
    if "bf16" in rate:
        rows.append(
            Row(
                SECTION,
                f"matmul {matmul_size}² bf16",
                f"{rate['bf16'] / 1e9:.0f} GFLOP/s",
                f"{timings['matmul bf16']} per {products[torch.bfloat16]} products",
                {"flops_per_s": rate["bf16"]},
            )
        )
    figures = {"matmul_flops_per_s": rate, "flops": flops}
    for name in models:
        rows += _model_rows(name, flops[name], timings, rate, onnx_difference.get(name))
        figures[name] = {
            k.removeprefix(name + " "): v.median
            for k, v in timings.items()
            if k.startswith(name + " ")
        }
    return rows, figures


def _model_rows(
    name: str, flops: int, timings: dict[str, Timing], rate: dict, onnx_difference: float | None
) -> list[Row]:
    fp32 = timings[f"{name} fp32"]
    floor32 = flops / rate["fp32"]
    rows = [
        Row(
            SECTION,
            f"{name}: encode fp32",
            str(fp32),
            f"{flops / 1e9:.2f} GFLOPs (encoder + skip neck) → {flops / fp32.median / 1e9:.0f} "
            f"GFLOP/s; floor {fmt_seconds(floor32)} → **{fp32.median / floor32:.2f}× floor**",
            {"seconds": fp32.median, "x_floor": fp32.median / floor32, "flops": flops},
        )
    ]
    if f"{name} bf16" in timings:
        bf16 = timings[f"{name} bf16"]
        floor16 = flops / rate["bf16"]
        rows.append(
            Row(
                SECTION,
                f"{name}: encode bf16 autocast",
                str(bf16),
                f"**{fp32.median / bf16.median:.2f}× faster** than fp32; bf16 floor "
                f"{fmt_seconds(floor16)} → {bf16.median / floor16:.2f}× floor",
                {
                    "seconds": bf16.median,
                    "speedup": fp32.median / bf16.median,
                    "x_floor": bf16.median / floor16,
                },
            )
        )
    single = timings[f"{name} fp32 1 thread"]
    rows.append(
        Row(
            SECTION,
            f"{name}: encode fp32, 1 thread",
            str(single),
            f"{single.median / fp32.median:.2f}× the {torch.get_num_threads()}-thread time",
            {"seconds": single.median, "vs_default_threads": single.median / fp32.median},
        )
    )
    plain_key = f"{name} fp32 plain attention"
    if plain_key in timings:
        plain = timings[plain_key]
        rows.append(
            Row(
                SECTION,
                f"{name}: encode fp32, plain window attention",
                str(plain),
                f"roll + materialised scores + bias per call; ours is "
                f"{plain.median / fp32.median:.2f}× faster",
                {"seconds": plain.median, "speedup_ours": plain.median / fp32.median},
            )
        )
    onnx_key = f"{name} fp32 onnxruntime"
    if onnx_key in timings:
        onnx = timings[onnx_key]
        rows.append(
            Row(
                SECTION,
                f"{name}: encode fp32, ONNX Runtime",
                str(onnx),
                f"**{fp32.median / onnx.median:.2f}× faster** than torch fp32 (below 1: "
                f"slower); outputs differ by ≤ {onnx_difference:.1e}",
                {
                    "seconds": onnx.median,
                    "speedup": fp32.median / onnx.median,
                    "max_abs_difference": onnx_difference,
                },
            )
        )
    return rows
