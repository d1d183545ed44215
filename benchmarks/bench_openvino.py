"""OpenVINO as an encoder runtime: speed and agreement against torch fp32 and ONNX Runtime.

Not a dependency (``pip install openvino`` first). The encoder step is the graph
``inference.onnx_encoder`` exports from our own modules; OpenVINO compiles that ONNX file for
its CPU plugin with float32 inference precision (its default on CPUs with native bf16 would be
bf16) and the same thread count as torch. The three runtimes encode the same real slice
(nuclei2d, 512², resized to the model's 256 frame) in interleaved rounds; agreement is the
largest absolute difference of any output against torch fp32, divided by the range of that
output (``runtime_choice`` accepts 1e-3 of the range for the logits).

    python benchmarks/bench_openvino.py --models litemedsam,swin-litemedsam --repeats 5
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_setup import build_model
from napari_swinlitemedsam.inference import intensity, transforms
from napari_swinlitemedsam.inference.cpu_features import describe_cpu
from napari_swinlitemedsam.inference.onnx_encoder import OnnxEncoder
from napari_swinlitemedsam.io.samples import load_sample
from timing import measure_interleaved


def openvino_encoder(onnx_path: Path, threads: int):
    """A callable (1, 3, 256, 256) float32 array -> list of output arrays, on OpenVINO's CPU."""
    import openvino

    core = openvino.Core()
    compiled = core.compile_model(
        str(onnx_path),
        "CPU",
        {
            "INFERENCE_NUM_THREADS": threads,
            "INFERENCE_PRECISION_HINT": "f32",
            "PERFORMANCE_HINT": "LATENCY",
        },
    )
    request = compiled.create_infer_request()

    def run(array: np.ndarray) -> list[np.ndarray]:
        request.infer([array])
        return [np.array(request.get_output_tensor(i).data) for i in range(len(compiled.outputs))]

    return run


def compare(name: str, repeats: int) -> list[str]:
    model = build_model(name)
    image = intensity.to_rgb_uint8(load_sample("nuclei2d").image)
    image_256, _ = transforms.prepare_image(image)
    tensor = torch.from_numpy(np.ascontiguousarray(image_256))[None]
    array = tensor.numpy()
    onnx = OnnxEncoder(model, name)
    openvino_run = openvino_encoder(onnx.path, torch.get_num_threads())

    def torch_run() -> list[np.ndarray]:
        with torch.inference_mode():
            features = model.encode(tensor)[0]
        return [t.numpy() for t in features.tensors().values()]

    def onnx_run() -> list[np.ndarray]:
        return [t.numpy() for t in onnx.encode(tensor).tensors().values()]

    reference, onnx_out, openvino_out = torch_run(), onnx_run(), openvino_run(array)
    timings = measure_interleaved(
        {"torch fp32": torch_run, "onnxruntime": onnx_run, "openvino": lambda: openvino_run(array)},
        repeats,
        warmup=1,
    )

    def agreement(outputs: list[np.ndarray]) -> float:
        return max(
            float(np.abs(a - b).max()) / float(np.ptp(b)) for a, b in zip(outputs, reference)
        )

    base = timings["torch fp32"].median
    lines = [f"| {name} | torch fp32 | {timings['torch fp32']} | 1.00× | (reference) |"]
    for label, outputs in (("onnxruntime", onnx_out), ("openvino", openvino_out)):
        lines.append(
            f"| {name} | {label} | {timings[label]} | {base / timings[label].median:.2f}× | "
            f"{agreement(outputs):.1e} of the range |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="litemedsam,swin-litemedsam")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    import openvino

    threads = torch.get_num_threads()
    print(f"CPU: {describe_cpu().summary()}; torch {torch.__version__} ({threads} threads)")
    print(f"openvino {openvino.__version__}")
    print("| model | runtime | encode (median, min, spread) | speed vs torch | outputs differ by |")
    print("|---|---|---|---|---|")
    for name in args.models.split(","):
        for line in compare(name, args.repeats):
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
