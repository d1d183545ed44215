"""Several slices encoded side by side on a graph runtime (inference/parallel_encodes.py)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from napari_swinlitemedsam.cohort.cases import embed_planes
from napari_swinlitemedsam.inference.embedding_cache import EmbeddingCache
from napari_swinlitemedsam.inference.generators import run_to_end
from napari_swinlitemedsam.inference.onnx_encoder import OnnxEncoder
from napari_swinlitemedsam.inference.parallel_encodes import OnnxStreams, stream_count
from napari_swinlitemedsam.inference.predictor import BoxPredictor
from napari_swinlitemedsam.inference.volume import segment_volume
from napari_swinlitemedsam.model.registry import build_litemedsam
from stub_segmenter import CountingSegmenter


class _SlowSession:
    """Stands in for an ONNX Runtime session: doubles its input after a pause, notes its thread."""

    def __init__(self, threads: int, log: list, fail_on: float | None = None) -> None:
        self.threads, self.log, self.fail_on = threads, log, fail_on

    def get_inputs(self):
        return [type("Input", (), {"name": "images"})()]

    def run(self, _outputs, feeds):
        array = feeds["images"]
        self.log.append((threading.get_ident(), time.perf_counter()))
        time.sleep(0.05)
        if self.fail_on is not None and array.flat[0] == self.fail_on:
            raise RuntimeError("the graph failed")
        return [array * 2]


def test_stream_count_needs_a_thread_per_stream():
    assert stream_count(1) == 1
    assert stream_count(2) == 2
    assert stream_count(16) == 2  # measured on 2 cores only: fixed


def test_streams_share_the_threads_keep_the_order_and_run_at_once():
    log: list = []
    opened: list[int] = []

    def open_session(threads):
        opened.append(threads)
        return _SlowSession(threads, log)

    streams = OnnxStreams(open_session, threads=4, streams=2)
    assert opened == [2, 2]
    arrays = [np.full((1, 3, 2, 2), float(i), np.float32) for i in range(5)]
    outputs = streams.run(arrays)
    assert [float(out[0].flat[0]) for out in outputs] == [0.0, 2.0, 4.0, 6.0, 8.0]
    assert len({thread for thread, _ in log}) == 2  # two streams, two threads
    starts = sorted(started for _, started in log)
    assert starts[1] - starts[0] < 0.04  # the second began while the first slept


def test_a_stream_error_reaches_the_caller():
    streams = OnnxStreams(lambda threads: _SlowSession(threads, [], fail_on=3.0), 2, 2)
    arrays = [np.full((1, 3, 2, 2), float(i), np.float32) for i in range(4)]
    with pytest.raises(RuntimeError, match="the graph failed"):
        streams.run(arrays)


@pytest.fixture(scope="module")
def random_litemedsam():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build_litemedsam().eval()


def _model_inputs(count: int) -> torch.Tensor:
    """(count, 3, 256, 256) distinct images in [0, 1]."""
    generator = torch.Generator().manual_seed(5)
    return torch.rand(count, 3, 256, 256, generator=generator)


@pytest.mark.slow  # six real-architecture encodes
@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_side_by_side_encodes_equal_one_at_a_time(random_litemedsam, runtime):
    """Same graph, fewer threads per encode: float32 rounding only, each slice its own output."""
    if runtime == "openvino":
        pytest.importorskip("openvino")  # the optional extra
        from napari_swinlitemedsam.inference.openvino_encoder import OpenVinoEncoder as Encoder
    else:
        Encoder = OnnxEncoder
    # Two threads whatever the test worker has: the streams need one each.
    encoder = Encoder(random_litemedsam, "random", threads=2)
    assert encoder.streams == 2
    images = _model_inputs(3)
    together = encoder.encode_many(images)
    for image, features in zip(images, together, strict=True):
        alone = encoder.encode(image[None])
        torch.testing.assert_close(features.embedding, alone.embedding, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(together[0].embedding, together[1].embedding)
    single = encoder.encode_many(images[:1])  # one slice: the full-width session
    torch.testing.assert_close(single[0].embedding, together[0].embedding, atol=1e-4, rtol=1e-4)


class _PairedPredictor(BoxPredictor):
    """The stand-in segmenter's predictor, claiming two slices per encode; notes each call."""

    def __init__(self, **options) -> None:
        super().__init__(CountingSegmenter(), cache=EmbeddingCache(1 << 28), **options)
        self.calls: list[int] = []

    @property
    def slices_per_encode(self) -> int:
        return 2

    def encode_many(self, images, keys=None):
        self.calls.append(len(images))
        return super().encode_many(images, keys)


def _blobs(depth: int = 8, size: int = 48) -> np.ndarray:
    zz, yy, xx = np.mgrid[:depth, :size, :size]
    disc = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 5) ** 2
    noise = np.random.default_rng(0).integers(0, 30, size=(depth, size, size))
    return (noise + 200 * disc).clip(0, 255).astype(np.uint8)


def test_a_propagation_asks_for_the_predictors_slices_per_encode():
    volume = _blobs()
    boxes = np.array([[14, 14, 1, 34, 34, 6]])
    plain = run_to_end(
        segment_volume(BoxPredictor(CountingSegmenter()), volume, boxes, lookahead=0)
    )
    paired = _PairedPredictor()
    labels = run_to_end(segment_volume(paired, volume, boxes))
    assert plain.any()
    np.testing.assert_array_equal(labels, plain)  # the stand-in encodes each slice alone
    assert max(paired.calls) == 2 and sum(paired.calls) == 6  # 6 slices, in pairs
    forced = _PairedPredictor()
    run_to_end(segment_volume(forced, volume, boxes, encode_batch=1))
    assert max(forced.calls) == 1


def test_embedding_planes_encodes_pairs_and_reports_every_plane_in_order(tmp_path):
    from napari_swinlitemedsam.inference.disk_cache import DiskEmbeddingCache

    planes = list(_blobs(depth=5))
    first = _PairedPredictor(disk_cache=DiskEmbeddingCache(tmp_path))
    first.encode(planes[1])  # one plane already in the disk cache
    first.calls.clear()
    progress: list[tuple[int, int]] = []
    encoded, cached = embed_planes(first, planes, on_slice=lambda *done: progress.append(done))
    assert (encoded, cached) == (4, 1)
    assert first.calls == [2, 2]
    assert progress == [(done, 5) for done in range(1, 6)]
    again = _PairedPredictor(disk_cache=DiskEmbeddingCache(tmp_path))
    assert embed_planes(again, planes) == (0, 5)
    assert again.calls == []


@pytest.mark.parametrize(
    ("runtime", "threads", "expected"),
    [
        ("onnxruntime", 2, 2),
        ("openvino", 4, 2),
        ("onnxruntime", 1, 1),
        ("torch", 2, 1),  # torch's batched encodes were no faster per slice
    ],
)
def test_slices_per_encode_follow_the_runtime_and_threads(monkeypatch, runtime, threads, expected):
    from napari_swinlitemedsam.inference.graph_steps import GraphSteps

    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    steps = GraphSteps(CountingSegmenter(), "stub", runtime, "torch")  # nothing is opened
    assert steps.slices_per_encode == expected
