"""Ways to run an image encoder faster in float32: each measured against plain torch.

Variants, all float32, measured in interleaved rounds on the same real slice (nuclei2d 512²,
resized to the model's 256 frame):

* ``torch`` — the model as it runs by default (eager; window attention is already one
  ``scaled_dot_product_attention`` call with the relative-position bias and shift mask folded
  into one additive mask; LayerNorm and GELU are torch's fused kernels);
* ``channels-last`` — the input in channels-last memory layout (the 1×1-conv stem and the
  skip neck's convolutions may take another kernel);
* ``torch.compile`` — inductor's code generation (fuses the elementwise work between the
  matrix products); its compile time is reported apart, as it is paid in every new process;
* ``onnxruntime`` / ``openvino`` — our exported graph on those runtimes (OpenVINO only where
  the ``openvino`` extra is installed).

Agreement: the largest absolute difference of any encoder output against ``torch``, divided
by that output's range.

    python benchmarks/bench_encoder_variants.py --models swin-litemedsam --repeats 5
    python benchmarks/bench_encoder_variants.py --models swin-litemedsam,litemedsam --no-compile
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_openvino import openvino_encoder
from bench_setup import build_model
from napari_swinlitemedsam.inference import intensity, transforms
from napari_swinlitemedsam.inference.cpu_features import describe_cpu
from napari_swinlitemedsam.inference.onnx_encoder import OnnxEncoder
from napari_swinlitemedsam.io.samples import load_sample
from timing import fmt_seconds, measure_interleaved

Outputs = list[np.ndarray]


def variants(name: str, compile_too: bool = True) -> tuple[dict, dict[str, float]]:
    """name -> callable giving the encoder outputs as arrays; and set-up seconds per variant
    (``compile_too`` False leaves torch.compile out: minutes of compiling on a small CPU)."""
    model = build_model(name)
    image = intensity.to_rgb_uint8(load_sample("nuclei2d").image)
    image_256, _ = transforms.prepare_image(image)
    tensor = torch.from_numpy(np.ascontiguousarray(image_256))[None]
    channels_last = tensor.contiguous(memory_format=torch.channels_last)

    def arrays(features) -> Outputs:
        return [t.detach().numpy() for t in features.tensors().values()]

    def eager(batch: torch.Tensor) -> Outputs:
        with torch.inference_mode():
            return arrays(model.encode(batch)[0])

    setup: dict[str, float] = {}
    runs = {"torch": lambda: eager(tensor), "channels-last": lambda: eager(channels_last)}

    if compile_too:
        started = time.perf_counter()
        compiled = torch.compile(model.encode)
        with torch.inference_mode():
            compiled(tensor)  # the compilation happens at the first call
        setup["torch.compile"] = time.perf_counter() - started

        def compiled_run() -> Outputs:
            with torch.inference_mode():
                return arrays(compiled(tensor)[0])

        runs["torch.compile"] = compiled_run

    started = time.perf_counter()
    onnx = OnnxEncoder(model, name)
    onnx.encode(tensor)
    setup["onnxruntime"] = time.perf_counter() - started
    runs["onnxruntime"] = lambda: arrays(onnx.encode(tensor))
    if importlib.util.find_spec("openvino") is not None:
        started = time.perf_counter()
        run_openvino = openvino_encoder(onnx.path, torch.get_num_threads())
        array = tensor.numpy()
        run_openvino(array)
        setup["openvino"] = time.perf_counter() - started
        runs["openvino"] = lambda: run_openvino(array)
    return runs, setup


def compare(name: str, repeats: int, compile_too: bool = True) -> list[str]:
    runs, setup = variants(name, compile_too)
    reference = runs["torch"]()
    agreement = {
        label: max(float(np.abs(a - b).max()) / float(np.ptp(b)) for a, b in zip(run(), reference))
        for label, run in runs.items()
    }
    timings = measure_interleaved(runs, repeats, warmup=1)
    base = timings["torch"].median
    lines = []
    for label, timing in timings.items():
        prepared = fmt_seconds(setup[label]) if label in setup else "–"
        lines.append(
            f"| {name} | {label} | {timing} | {base / timing.median:.2f}× | "
            f"{agreement[label]:.1e} | {prepared} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="swin-litemedsam")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--no-compile", action="store_true", help="leave torch.compile out (minutes to compile)"
    )
    args = parser.parse_args(argv)
    threads = torch.get_num_threads()
    print(f"CPU: {describe_cpu().summary()}; torch {torch.__version__} ({threads} threads)")
    print(
        "| model | variant | encode (median, min, spread) | speed vs torch "
        "| differs from torch by (of the range) | set-up (compile, export) |"
    )
    print("|---|---|---|---|---|---|")
    for name in args.models.split(","):
        for line in compare(name, args.repeats, not args.no_compile):
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
