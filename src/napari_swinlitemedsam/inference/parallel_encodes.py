"""Several slices encoded side by side on a graph runtime, each on its own share of the cores.

One encode on ONNX Runtime or OpenVINO with all T threads leaves cores waiting at every
synchronisation point of its operators (a 256x256 slice is small work to split T ways). Work
that has many slices to encode (a 3D propagation, encoding a series ahead) gets more slices per
second from ``streams`` encodes running at once, each with T / streams threads: on the 2-core
development CPU a predictor encoded slices 1.07-1.12x faster that way on ONNX Runtime (both
models) and 1.02-1.07x on OpenVINO, and a 60-slice 3D propagation took 1.10x less time
(``benchmarks/bench_parallel_encodes.py``, docs/performance.md). One slice alone still goes
through the full-width session: a user's box waits for one slice, not for a pair.

The outputs equal a full-width encode's up to float32 rounding (bit for bit on that CPU).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

#: Encodes run side by side where at least this many threads are given (each then gets
#: threads // ENCODE_STREAMS). Measured on 2 cores only; more streams on larger CPUs are
#: plausible but unmeasured, so the count stays fixed.
ENCODE_STREAMS = 2


def stream_count(threads: int) -> int:
    """How many encodes run side by side with ``threads`` threads (1: one at a time)."""
    return ENCODE_STREAMS if threads >= ENCODE_STREAMS else 1


class OnnxStreams:
    """``streams`` ONNX Runtime sessions of one graph, each with its share of ``threads``.

    Args:
        open_session: threads -> a session of the graph (one (1, 3, 256, 256) input).
        threads: threads of all sessions together.
        streams: sessions (encodes at once).
    """

    def __init__(self, open_session: Callable[[int], Any], threads: int, streams: int) -> None:
        share = max(1, int(threads) // int(streams))
        self.sessions = [open_session(share) for _ in range(int(streams))]
        self._input = self.sessions[0].get_inputs()[0].name

    def run(self, arrays: list[np.ndarray]) -> list[list[np.ndarray]]:
        """B (1, 3, 256, 256) float32 arrays -> the graph's outputs for each, in order.

        Stream i encodes arrays i, i + streams, ...; ONNX Runtime releases the GIL while it
        computes, so the streams' threads run at once.
        """
        results: list[list[np.ndarray]] = [[] for _ in arrays]
        streams = len(self.sessions)

        def encode_share(stream: int) -> None:
            session = self.sessions[stream]
            for position in range(stream, len(arrays), streams):
                results[position] = session.run(None, {self._input: arrays[position]})

        with ThreadPoolExecutor(streams, "encode-stream") as pool:
            for finished in [pool.submit(encode_share, i) for i in range(streams)]:
                finished.result()  # re-raises a stream's error in the caller's thread
        return results


class OpenVinoStreams:
    """One graph compiled for OpenVINO's CPU plugin with ``streams`` streams, float32.

    Args:
        path: the exported graph (one (1, 3, 256, 256) input).
        threads: threads of all streams together.
        streams: encodes at once (OpenVINO's ``NUM_STREAMS``; an infer request each).
    """

    def __init__(self, path: Path, threads: int, streams: int) -> None:
        import openvino

        compiled = openvino.Core().compile_model(
            str(path),
            "CPU",
            {
                "INFERENCE_NUM_THREADS": int(threads),
                "INFERENCE_PRECISION_HINT": "f32",
                "PERFORMANCE_HINT": "THROUGHPUT",
                "NUM_STREAMS": int(streams),
            },
        )
        self._outputs = len(compiled.outputs)
        self._queue = openvino.AsyncInferQueue(compiled, int(streams))

    def run(self, arrays: list[np.ndarray]) -> list[list[np.ndarray]]:
        """B (1, 3, 256, 256) float32 arrays -> the graph's outputs for each, in order."""
        results: list[list[np.ndarray]] = [[] for _ in arrays]

        def keep(request, position: int) -> None:
            # Copies: a request's output buffers are reused by its next inference.
            results[position] = [
                np.array(request.get_output_tensor(i).data) for i in range(self._outputs)
            ]

        self._queue.set_callback(keep)
        for position, array in enumerate(arrays):
            self._queue.start_async([array], position)
        self._queue.wait_all()
        return results
