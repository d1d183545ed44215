"""The GPU path in one run: encoder per slice, a 300-slice CT propagation, the first mask.

Prepared to run as one short script on a machine with a CUDA GPU, and runnable on any device
(``--device cpu`` with a small case is what the test suite runs, so the script cannot rot while
no GPU is at hand)::

    python benchmarks/bench_gpu.py --json gpu.json              # CUDA, every default
    python benchmarks/bench_gpu.py --device cpu --slices 4 --size 128 --precisions fp32

What it measures, for each model (LiteMedSAM with its real weights, Swin-LiteMedSAM with the
synthetic benchmark weights):

* **encoder per slice**: ``model.encode`` on real slices (nuclei2d, head CT), in batches of
  ``--batches`` slices, under float32, bfloat16 autocast and float16 autocast
  (``--precisions``), the device synchronised before the clock stops. Agreement: the largest
  difference of the embedding from float32's, as a share of float32's value range.
* **300-slice CT propagation**: the bundled head CT (36 slices) resampled to ``--slices`` slices
  (nearest slice, so neighbours repeat as in a thin-slice scan) and ``--size``², its two labelled
  structures as 3D boxes, ``segment_volume`` with the predictor's defaults (pipelined encode)
  and ``--encode-batch`` slices per encoder call, under each precision of ``--precisions``
  the device runs (half precisions on a GPU only); their labels compared with float32's (DSC).
* **first mask**: a new predictor, one 512² image (nuclei2d) to its first mask: the first time
  in the process (CUDA context, kernel selection) and on a second image (what each new image
  costs).

The GPU's name, torch and CUDA versions head the table; ``--json`` keeps every figure.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_setup import build_model, make_predictor, tight_boxes_3d  # noqa: E402
from napari_swinlitemedsam.evaluation.metrics import dice  # noqa: E402
from napari_swinlitemedsam.inference import transforms  # noqa: E402
from napari_swinlitemedsam.inference.generators import run_to_end  # noqa: E402
from napari_swinlitemedsam.inference.inputs import model_input_uint8  # noqa: E402
from napari_swinlitemedsam.inference.intensity import to_uint8  # noqa: E402
from napari_swinlitemedsam.inference.precision import (  # noqa: E402
    PRECISIONS,
    encoder_context,
    encoder_input,
)
from napari_swinlitemedsam.inference.volume import segment_volume  # noqa: E402
from napari_swinlitemedsam.io.samples import load_sample  # noqa: E402
from report import Row, as_json_ready, markdown_table  # noqa: E402
from timing import fmt_seconds  # noqa: E402


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median seconds of ``repeats`` calls after one untimed call, the device synchronised."""
    fn()
    synchronize(device)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        samples.append(time.perf_counter() - start)
    return float(np.median(samples))


def device_summary(device: torch.device) -> dict:
    """What ran the figures: the GPU (or CPU) name and the versions that matter."""
    summary = {
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        summary["gpu"] = torch.cuda.get_device_name(device)
        summary["cuda"] = torch.version.cuda
        summary["bf16_supported"] = bool(torch.cuda.is_bf16_supported())
    return summary


def encoder_batch(count: int, device: torch.device) -> torch.Tensor:
    """(count, 3, 256, 256) encoder input from real slices: nuclei2d and head CT slices, cycled."""
    head_ct = to_uint8(load_sample("head_ct").image)  # the whole stack mapped at once
    picks = np.linspace(0, len(head_ct) - 1, 7).round().astype(int)
    images = [load_sample("nuclei2d").image] + [head_ct[z] for z in picks]
    prepared = [transforms.prepare_image(model_input_uint8(image))[0] for image in images]
    batch = np.stack([prepared[i % len(prepared)] for i in range(count)])
    return torch.from_numpy(batch).to(device)


def encoder_rows(name, model, device, precisions, batches, repeats) -> list[Row]:
    """Encoder time per slice for every precision and batch size, with its agreement."""
    rows = []
    largest = encoder_batch(max(batches), device)
    with torch.inference_mode():
        reference = model.encode(largest[:1])[0].embedding.float()
    value_range = float(reference.max() - reference.min())
    for precision in precisions:
        for batch in batches:
            images = encoder_input(largest[:batch], precision)

            # the predictor's own autocast and memory layout for ``precision``
            def encode(images=images, precision=precision):
                with torch.inference_mode(), encoder_context(precision, device):
                    return model.encode(images)

            seconds = timed(encode, device, repeats)
            embedding = encode()[0].embedding.float()
            difference = float((embedding - reference).abs().max()) / value_range
            rows.append(
                Row(
                    "encoder",
                    f"{name}: {precision}, {batch} slice(s) per call",
                    f"{fmt_seconds(seconds / batch)} per slice",
                    f"median of {repeats}; embedding differs from fp32 by "
                    f"{difference:.1e} of its range",
                    {"seconds_per_slice": seconds / batch, "difference": difference},
                )
            )
    return rows


def ct_case(slices: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The head CT resampled to (slices, size, size) uint8 and the 3D boxes of its labels."""
    sample = load_sample("head_ct")
    z = np.linspace(0, len(sample.image) - 1, slices).round().astype(int)
    rows = np.linspace(0, sample.image.shape[1] - 1, size).round().astype(int)
    cols = np.linspace(0, sample.image.shape[2] - 1, size).round().astype(int)
    volume = to_uint8(sample.image[z][:, rows][:, :, cols])
    labels = sample.labels[z][:, rows][:, :, cols]
    boxes, _ = tight_boxes_3d(labels)
    return volume, boxes


def runs_on(precision: str, device: torch.device) -> bool:
    """Whether the propagation is measured under ``precision`` on ``device``: float32
    everywhere, half precisions on a GPU (on a CPU they are the runtime section's business)."""
    if precision == "fp32":
        return True
    if device.type != "cuda":
        return False
    return precision != "bf16" or bool(torch.cuda.is_bf16_supported())


def propagation_rows(name, model, device, precisions, slices, size, encode_batch) -> list[Row]:
    """The CT propagation under each precision the device runs; labels compared with fp32."""
    volume, boxes = ct_case(slices, size)
    rows, labels = [], {}
    for precision in ["fp32"] + [p for p in precisions if p != "fp32" and runs_on(p, device)]:
        predictor = make_predictor(model.to(device), name, precision=precision, runtime="torch")
        start = time.perf_counter()
        labels[precision] = run_to_end(
            segment_volume(predictor, volume, boxes, encode_batch=encode_batch)
        )
        synchronize(device)
        seconds = time.perf_counter() - start
        detail = f"{len(boxes)} objects, {encode_batch} slice(s) per encode"
        numbers = {"seconds": seconds, "seconds_per_slice": seconds / slices}
        if precision != "fp32":
            agreement = min(
                dice(labels[precision] == k, labels["fp32"] == k) for k in range(1, len(boxes) + 1)
            )
            detail += f"; lowest object DSC with fp32 {agreement:.4f}"
            numbers["min_object_dsc"] = agreement
        rows.append(
            Row(
                "propagation",
                f"{name}: {slices}×{size}² CT, {precision}",
                f"{fmt_seconds(seconds)} ({fmt_seconds(seconds / slices)} per slice)",
                detail,
                numbers,
            )
        )
    return rows


def first_mask_rows(name, model, device) -> list[Row]:
    """Image -> first mask on a new predictor: first image in the process, then a second."""
    image = load_sample("nuclei2d").image
    predictor = make_predictor(model.to(device), name, runtime="torch", precision="fp32")
    box = [[180, 200, 240, 260]]
    figures = {}
    for label, picture in (("first image", image), ("next image", image[:, ::-1].copy())):
        start = time.perf_counter()
        predictor.set_image(picture)
        predictor.predict(box)
        synchronize(device)
        figures[label] = time.perf_counter() - start
    start = time.perf_counter()
    predictor.predict([[100, 100, 160, 170]])
    synchronize(device)
    figures["later box"] = time.perf_counter() - start
    return [
        Row("first mask", f"{name}: {label}", fmt_seconds(seconds), "fp32", {"seconds": seconds})
        for label, seconds in figures.items()
    ]


def run(args: argparse.Namespace) -> tuple[list[Row], dict]:
    device = torch.device(args.device)
    rows: list[Row] = []
    for name in args.models:
        model = build_model(name).to(device)
        rows += first_mask_rows(name, model, device)
        rows += encoder_rows(name, model, device, args.precisions, args.batches, args.repeats)
        rows += propagation_rows(
            name, model, device, args.precisions, args.slices, args.size, args.encode_batch
        )
    return rows, device_summary(device)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument(
        "--models", type=lambda s: s.split(","), default=["litemedsam", "swin-litemedsam"]
    )
    parser.add_argument(
        "--precisions", type=lambda s: s.split(","), default=["fp32", "bf16", "fp16"]
    )
    parser.add_argument(
        "--batches", type=lambda s: [int(b) for b in s.split(",")], default=[1, 8, 32]
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--encode-batch", type=int, default=8)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    unknown = set(args.precisions) - set(PRECISIONS)
    if unknown:
        parser.error(f"unknown precision(s) {sorted(unknown)}; choose from {sorted(PRECISIONS)}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("no CUDA GPU is visible to torch here; pass --device cpu for a dry run")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    rows, summary = run(args)
    print(", ".join(f"{key} {value}" for key, value in summary.items()))
    print(markdown_table(rows))
    if args.json:
        args.json.write_text(json.dumps({"device": summary, "rows": as_json_ready(rows)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
