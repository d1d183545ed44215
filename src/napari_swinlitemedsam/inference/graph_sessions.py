"""Exporting a decoder step to ONNX and running it on ONNX Runtime or OpenVINO's CPU plugin.

The decoder steps of :mod:`.graph_decoder` and :mod:`.graph_skip_decoder` are written once per
set of weights (see :func:`.onnx_encoder.cached_graph`) and opened as a plain function of numpy
arrays, whichever runtime runs them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from napari_swinlitemedsam.inference.onnx_encoder import OPSET, open_cpu_session
from napari_swinlitemedsam.storage.atomic_files import write_atomically

GRAPH_RUNTIMES = ("onnxruntime", "openvino")
OUTPUTS = ("logits", "iou")

GraphRun = Callable[..., list[np.ndarray]]


def export_graph(
    step: torch.nn.Module,
    example: tuple[torch.Tensor, ...],
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: dict[str, dict[int, str]],
    path: Path,
) -> Path:
    """Write ``step`` traced on ``example`` to the ONNX file ``path`` (atomically)."""

    def write(stream) -> None:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about shape checks
            torch.onnx.export(
                step,
                example,
                stream,
                opset_version=OPSET,
                dynamo=False,
                input_names=list(input_names),
                output_names=list(output_names),
                dynamic_axes=dynamic_axes or None,
            )

    return write_atomically(path, write, durable=False, temp_suffix=".onnx")


def open_graph(
    path: Path, runtime: str, threads: int, inputs: Sequence[str], outputs: Sequence[str]
) -> GraphRun:
    """``path`` opened on ``runtime`` with ``threads``: a function of the input arrays (in the
    order of ``inputs``) returning the output arrays (in the order of ``outputs``)."""
    if runtime not in GRAPH_RUNTIMES:
        raise ValueError(f"runtime must be one of {GRAPH_RUNTIMES}, got {runtime!r}")
    if runtime == "onnxruntime":
        session = open_cpu_session(path, threads)

        def run_onnxruntime(*arrays: np.ndarray) -> list[np.ndarray]:
            return session.run(list(outputs), dict(zip(inputs, arrays, strict=True)))

        return run_onnxruntime

    from napari_swinlitemedsam.inference.openvino_encoder import compile_on_cpu

    request = compile_on_cpu(path, threads).create_infer_request()

    def run_openvino(*arrays: np.ndarray) -> list[np.ndarray]:
        request.infer(list(arrays))
        # copies: the request's output buffers are reused by the next inference
        return [np.array(request.get_output_tensor(i).data) for i in range(len(outputs))]

    return run_openvino


def float_array(tensor: torch.Tensor) -> np.ndarray:
    """A float32, C-contiguous numpy copy (or view) of ``tensor`` on the CPU."""
    return tensor.detach().to("cpu", torch.float32).contiguous().numpy()
