"""The ONNX Runtime backend for the encoder step (``BoxPredictor(runtime="onnxruntime")``).

onnxruntime and onnx are dependencies; ``runtime="auto"`` uses this backend where the self-check
of :mod:`.runtime_choice` finds it faster than torch with equal masks. The encoder step of a
model (``PromptableSegmenter.encode``: the image encoder and, for Swin-LiteMedSAM, the skip
neck) is exported from our own modules once per set of weights (the file name carries the
weights fingerprint, so new weights get a new graph) to an ``.onnx`` file in a cache folder,
and run on ORT's CPU provider with all graph optimisations. Outputs equal torch's float32
outputs to a few 1e-6 (masks can differ in pixels whose logit is that close to 0).

Whether it pays depends on the model and the CPU; ``benchmarks/run_benchmarks.py`` measures it
(on the 2-core development machines it ran LiteMedSAM's TinyViT encoder about twice as fast as
PyTorch and Swin-LiteMedSAM's encoder no faster; see ``docs/performance.md``).
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from napari_swinlitemedsam.inference.disk_cache import weights_fingerprint
from napari_swinlitemedsam.inference.parallel_encodes import OnnxStreams, stream_count
from napari_swinlitemedsam.model.segmenter import ImageFeatures, PromptableSegmenter
from napari_swinlitemedsam.model.skip_mask_decoder import SkipContext
from napari_swinlitemedsam.storage.atomic_files import write_atomically

RUNTIMES = ("torch", "onnxruntime", "openvino")
OPSET = 18
#: Bump when what a graph computes changes for the same weights (its file name carries it, so a
#: graph exported by an older version is never loaded). 2: Swin-LiteMedSAM's skip context.
GRAPH_VERSION = 2
EXPORT_DIR_ENV = "SWINLITEMEDSAM_ONNX_DIR"


class OnnxRuntimeMissing(ImportError):
    """onnxruntime (or onnx, for the export) is not installed."""


def check_runtime(runtime: str) -> str:
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    if runtime == "onnxruntime" and not onnx_available():
        raise OnnxRuntimeMissing(
            "runtime='onnxruntime' needs the packages onnxruntime and onnx: "
            "pip install onnxruntime onnx (or use runtime='torch')"
        )
    if runtime == "openvino":
        from napari_swinlitemedsam.inference.openvino_encoder import check_openvino

        check_openvino()
    return runtime


def onnx_available() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx"))


def default_export_dir() -> Path:
    """``$SWINLITEMEDSAM_ONNX_DIR``, else ``onnx/`` in the user cache folder."""
    configured = os.environ.get(EXPORT_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("napari-swinlitemedsam")) / "onnx"


class _EncodeStep(torch.nn.Module):
    """``model.encode`` for one image as plain output tensors (what the exporter needs)."""

    def __init__(self, model: PromptableSegmenter) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = self.model.encode(images)[0]
        if features.skip_context is None:
            return (features.embedding,)
        return features.embedding, features.skip_context.fine, features.skip_context.coarse


def export_encoder(model: PromptableSegmenter, path: Path) -> Path:
    """Write the encoder step of ``model`` for a (1, 3, 256, 256) input to ``path``."""
    step = _EncodeStep(model).eval()
    example = torch.zeros(1, 3, model.image_size, model.image_size)

    def write(stream) -> None:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about shape checks
            torch.onnx.export(step, (example,), stream, opset_version=OPSET, dynamo=False)

    return write_atomically(path, write, durable=False, temp_suffix=".onnx")


def exported_graph(model: PromptableSegmenter, model_name: str, export_dir: Path | None) -> Path:
    """The ONNX file of ``model``'s encoder step, exported first if not there yet."""
    return cached_graph(model, model_name, export_dir, "", export_encoder)


def cached_graph(
    model: PromptableSegmenter,
    model_name: str,
    export_dir: Path | None,
    part: str,
    export: Callable[[PromptableSegmenter, Path], Path],
) -> Path:
    """The ONNX file of one step of ``model`` (``part``: "" for the encoder step, e.g.
    "boxdecoder"), written by ``export(model, path)`` first if not there yet.

    The name carries the weights fingerprint, :data:`GRAPH_VERSION`, the opset and torch's
    version: new weights, new graph contents or a new exporter give a new file.
    """
    folder = Path(export_dir) if export_dir is not None else default_export_dir()
    weights = f"{model_name or 'model'}-{weights_fingerprint(model)}"
    step = f"-{part}" if part else ""
    path = folder / f"{weights}-g{GRAPH_VERSION}-opset{OPSET}{step}-torch{torch_version()}.onnx"
    if not path.exists():
        export(model, path)
        remove_outdated_graphs(folder, weights)
    return path


def torch_version() -> str:
    return torch.__version__.split("+")[0]


#: Graph parts no version exports any more (LiteMedSAM's box decoder became two graphs).
RETIRED_PARTS = ("boxdecoder",)


def remove_outdated_graphs(folder: Path, weights: str) -> list[Path]:
    """Delete the graphs of the same weights (``weights``: "name-fingerprint") that no
    version of this package loads any more: an older :data:`GRAPH_VERSION` or a retired part
    (about 16 MB each for LiteMedSAM). Graphs of other torch versions or opsets are kept:
    another environment may share the folder. Returns what was deleted."""
    pattern = re.compile(
        rf"{re.escape(weights)}-g(?P<version>\d+)-opset\d+(?:-(?P<part>[a-z]+))?-torch[^-]+\.onnx"
    )
    removed = []
    for candidate in folder.glob(f"{glob.escape(weights)}-g*.onnx"):
        found = pattern.fullmatch(candidate.name)
        if found is None:
            continue
        if int(found["version"]) < GRAPH_VERSION or found["part"] in RETIRED_PARTS:
            with contextlib.suppress(OSError):  # in use elsewhere (Windows): next time
                candidate.unlink()
                removed.append(candidate)
    return removed


class OnnxEncoder:
    """Runs a model's encoder step on ONNX Runtime.

    Args:
        model: the (float32, CPU) model whose weights are exported.
        model_name: names the exported file.
        export_dir: where exported files are kept (default: the user cache folder).
        threads: ORT intra-op threads (default: ``torch.get_num_threads()``).
    """

    def __init__(
        self,
        model: PromptableSegmenter,
        model_name: str = "",
        export_dir: Path | None = None,
        threads: int | None = None,
    ) -> None:
        check_runtime("onnxruntime")
        self.path = exported_graph(model, model_name, export_dir)
        self.threads = threads or torch.get_num_threads()
        self.session = open_cpu_session(self.path, self.threads)
        self._input = self.session.get_inputs()[0].name
        self._streams: OnnxStreams | None = None  # opened for the first several-slice call

    @property
    def streams(self) -> int:
        """Slices :meth:`encode_many` encodes side by side."""
        return stream_count(self.threads)

    def encode(self, image: torch.Tensor) -> ImageFeatures:
        """(1, 3, 256, 256) float32 in [0, 1] -> :class:`ImageFeatures` (CPU tensors)."""
        if image.ndim != 4 or image.shape[0] != 1:
            raise ValueError(
                f"the ONNX encoder takes one (1, 3, 256, 256) image, got {tuple(image.shape)}"
            )
        array = image.detach().to("cpu", torch.float32).contiguous().numpy()
        outputs = [torch.from_numpy(out) for out in self.session.run(None, {self._input: array})]
        return features_from_graph_outputs(outputs)

    def encode_many(self, images: torch.Tensor) -> list[ImageFeatures]:
        """(B, 3, 256, 256) -> B :class:`ImageFeatures`: :attr:`streams` slices side by side,
        each on its share of the threads (:mod:`.parallel_encodes`); one slice as :meth:`encode`."""
        if len(images) < 2 or self.streams < 2:
            return [self.encode(image[None]) for image in images]
        if self._streams is None:
            self._streams = OnnxStreams(
                lambda threads: open_cpu_session(self.path, threads), self.threads, self.streams
            )
        outputs = self._streams.run(graph_inputs(images))
        return [features_from_graph_outputs([torch.from_numpy(o) for o in one]) for one in outputs]


def open_cpu_session(path: Path, threads: int):
    """An ONNX Runtime session of ``path`` on the CPU, all graph optimisations, ``threads``.

    Its threads do not spin-wait for more work after a run: by default they keep their cores
    busy for a while, and what follows a run (torch's post-processing of a box, the decoder
    while the next slice encodes in the background) then shares the cores with idle spinning.
    On 2 cores a later box took ~90 ms with spinning and ~70 ms without (docs/performance.md).
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def graph_inputs(images: torch.Tensor) -> list[np.ndarray]:
    """(B, 3, 256, 256) -> B contiguous (1, 3, 256, 256) float32 CPU arrays, a graph's input."""
    if images.ndim != 4 or tuple(images.shape[1:]) != (3, 256, 256):
        raise ValueError(
            f"the encoder graph takes (B, 3, 256, 256) images, got {tuple(images.shape)}"
        )
    batch = images.detach().to("cpu", torch.float32)
    return [np.ascontiguousarray(one[None].numpy()) for one in batch]


def features_from_graph_outputs(outputs: list[torch.Tensor]) -> ImageFeatures:
    """The exported graph's outputs as :class:`ImageFeatures`: the (1, 256, 64, 64) embedding,
    then, for Swin-LiteMedSAM, the two skip maps (fine, coarse)."""
    if len(outputs) == 1:
        return ImageFeatures(outputs[0])
    embedding, fine, coarse = outputs
    return ImageFeatures(embedding, SkipContext(fine, coarse))
