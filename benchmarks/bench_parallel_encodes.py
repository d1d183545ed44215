"""Slices per second on a graph runtime: one full-width encode at a time vs two side by side.

What ``swinlitemedsam embed`` and a 3D propagation gain from ``inference/parallel_encodes.py``:
the same slices of the bundled nuclei3d stack encoded by one predictor

* **one at a time**: each slice alone through the session with all threads;
* **side by side**: two slices per ``encode_many`` call, each on half the threads;

measured interleaved, per installed graph runtime (ONNX Runtime; OpenVINO with the extra), with
the largest difference of the embeddings over their range. Usage::

    python benchmarks/bench_parallel_encodes.py --models litemedsam --slices 8 --repeats 3
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_setup import build_model, make_predictor, nuclei_case
from napari_swinlitemedsam.inference.cpu_features import describe_cpu
from napari_swinlitemedsam.inference.openvino_encoder import openvino_available
from napari_swinlitemedsam.inference.predictor import BoxPredictor
from report import Row, markdown_table
from timing import measure_interleaved

SECTION = "parallel encodes"


def parallel_encode_rows(model_name: str, slices: int, repeats: int) -> list[Row]:
    """Rows of one model: per runtime, seconds per slice both ways, the ratio, the agreement."""
    model = build_model(model_name)
    planes = list(nuclei_case(1, slices).volume)
    runtimes = ["onnxruntime"] + (["openvino"] if openvino_available() else [])
    rows = []
    for runtime in runtimes:
        predictor = make_predictor(model, model_name, runtime=runtime)
        rows += runtime_rows(model_name, runtime, predictor, planes, repeats)
    return rows


def runtime_rows(
    model_name: str, runtime: str, predictor: BoxPredictor, planes: list, repeats: int
) -> list[Row]:
    predictor.encode_many(planes[:2])  # untimed: export, open and compile every session
    predictor.encode(planes[0])
    embeddings = {}

    def alone() -> None:
        embeddings["alone"] = [predictor.encode(plane).features.embedding for plane in planes]

    def paired() -> None:
        pairs = [planes[i : i + 2] for i in range(0, len(planes), 2)]
        embeddings["paired"] = [
            encoded.features.embedding for pair in pairs for encoded in predictor.encode_many(pair)
        ]

    timings = measure_interleaved({"one at a time": alone, "side by side": paired}, repeats, 0)
    differs = max(
        float((a - b).abs().max() / (a.max() - a.min()))
        for a, b in zip(embeddings["alone"], embeddings["paired"], strict=True)
    )
    base = timings["one at a time"].median
    rows = []
    for label, timing in timings.items():
        per_slice = timing.scaled(1 / len(planes))
        ratio = base / timing.median
        rows.append(
            Row(
                SECTION,
                f"{model_name}: {runtime}, {label}",
                f"{per_slice} per slice",
                f"**{ratio:.2f}×** one at a time; embeddings differ by ≤ {differs:.1e} "
                f"of their range; {torch.get_num_threads()} threads",
                {"seconds_per_slice": per_slice.median, "ratio": ratio, "differs": differs},
            )
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="litemedsam")
    parser.add_argument("--slices", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    rows = []
    for name in args.models.split(","):
        rows += parallel_encode_rows(name, args.slices, args.repeats)
    print(f"CPU: {describe_cpu().summary()}")
    print(markdown_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
