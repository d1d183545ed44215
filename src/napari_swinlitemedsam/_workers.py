"""Model work off the GUI thread: ``thread_worker`` wrappers around the inference API, and a
runner that keeps at most one of them going.

The predictor is not thread-safe, so jobs run one after another. Each job gets plain arrays and
returns (or yields) plain results; layers are touched only in the callbacks, which napari runs
on the GUI thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import numpy as np
from napari.qt.threading import thread_worker
from qtpy.QtCore import Qt

from ._annotator_state import SliceKey


@dataclass(frozen=True)
class DecodeRequest:
    """All boxes of one slice for one batched decoder call.

    ``ids``: object ids, one per box. ``boxes``: (N, 4) xyxy inclusive pixels.
    ``points``: (N, P, 2) xy clicks or None; ``point_labels``: (N, P) 1/0/-1 or None.
    """

    slice_index: SliceKey
    ids: list[int]
    boxes: np.ndarray
    points: np.ndarray | None = None
    point_labels: np.ndarray | None = None


@dataclass(frozen=True)
class DecodeResult:
    """``masks``: (N, H, W) bool, in the order of ``request.ids``; ``seconds`` of model time."""

    request: DecodeRequest
    masks: np.ndarray
    seconds: float


def _plane(image: np.ndarray, slice_index: SliceKey) -> np.ndarray:
    return image if slice_index is None else image[slice_index]


@thread_worker
def load_predictor(name_or_path: str, device: str):
    """Load weights (offline) and return ``(BoxPredictor, seconds)``."""
    from .inference.predictor import BoxPredictor

    started = time.perf_counter()
    predictor = BoxPredictor.from_pretrained(name_or_path, device=device)
    return predictor, time.perf_counter() - started


@thread_worker
def prepare_image(data, is_stack: bool) -> np.ndarray:
    """The image as the model sees it: a (D, H, W) stack mapped to uint8 once for all slices;
    a 2D image is returned as it is (the predictor maps its intensities itself)."""
    from .inference.pipeline import volume_to_uint8

    array = np.asarray(data)
    return volume_to_uint8(array) if is_stack else array


@thread_worker
def encode_slice(predictor, image: np.ndarray, slice_index: SliceKey, key: Hashable):
    """Encode one slice into the predictor's cache; returns ``(slice_index, seconds)``."""
    started = time.perf_counter()
    predictor.encode(_plane(image, slice_index), key=key)
    return slice_index, time.perf_counter() - started


@thread_worker
def decode_slice(predictor, image: np.ndarray, key: Hashable, request: DecodeRequest) -> DecodeResult:
    """Encode the slice (or take it from the cache) and decode all its boxes in one call."""
    started = time.perf_counter()
    encoded = predictor.encode(_plane(image, request.slice_index), key=key)
    predictor.set_encoded(encoded)
    prediction = predictor.predict(
        request.boxes,
        points=request.points,
        point_labels=request.point_labels,
        slice_index=request.slice_index or 0,
    )
    return DecodeResult(request, prediction.masks, time.perf_counter() - started)


@thread_worker
def propagate_object(predictor, volume: np.ndarray, key_boxes: dict, volume_key: Hashable):
    """Follow one object through a (D, H, W) uint8 stack from its key-slice boxes.

    Yields :class:`~napari_swinlitemedsam.inference.volume.SliceResult` per slice; returns
    ``{z: (H, W) bool mask}``. Stops at the next slice when the worker is asked to quit.
    """
    from .inference.volume import propagate_from_key_slices

    return (yield from propagate_from_key_slices(predictor, volume, key_boxes, volume_key=volume_key))


class JobRunner:
    """Starts workers one at a time and knows which one is running.

    ``on_idle`` is called (on the GUI thread) after each job finishes, so the owner can start
    the next one; ``on_error`` receives any exception a job raised.
    """

    def __init__(self, on_idle: Callable[[], None], on_error: Callable[[Exception], None]) -> None:
        self._on_idle = on_idle
        self._on_error = on_error
        self._worker = None
        self._ended = threading.Event()
        self.kind = ""
        self._closed = False

    @property
    def busy(self) -> bool:
        return self._worker is not None

    def start(
        self,
        worker,
        kind: str,
        on_return: Callable | None = None,
        on_yield: Callable | None = None,
        on_done: Callable[[], None] | None = None,
    ) -> None:
        """Run ``worker`` (not started yet); callbacks are skipped once the runner is closed."""
        if self._closed:
            worker.quit()
            return
        if self._worker is not None:
            raise RuntimeError(f"a {self.kind} job is still running")
        self._worker, self.kind = worker, kind
        ended = self._ended = threading.Event()
        # Set from the worker thread itself, so close() can wait without an event loop.
        worker.finished.connect(ended.set, Qt.ConnectionType.DirectConnection)
        if on_return is not None:
            worker.returned.connect(self._guard(on_return))
        if on_yield is not None:
            worker.yielded.connect(self._guard(on_yield))
        worker.errored.connect(self._guard(self._on_error))
        worker.finished.connect(lambda: self._finished(worker, on_done))
        worker.start()

    def _guard(self, callback: Callable) -> Callable:
        def guarded(value):
            if not self._closed:
                callback(value)

        return guarded

    def _finished(self, worker, on_done: Callable[[], None] | None) -> None:
        if self._worker is worker:
            self._worker, self.kind = None, ""
        if self._closed:
            return
        if on_done is not None:
            on_done()
        self._on_idle()

    def cancel(self) -> None:
        """Ask the running job to stop (generators stop at their next slice)."""
        if self._worker is not None:
            self._worker.quit()

    def close(self, timeout_s: float = 30.0) -> bool:
        """Stop calling back, ask the job to quit and wait for its thread; True when it ended."""
        self._closed = True
        worker = self._worker
        if worker is None:
            return True
        worker.quit()
        return self._ended.wait(timeout_s)
