"""Model work off the GUI thread: jobs around the inference API, and a runner that starts them
as napari thread workers (``napari.qt.threading.create_worker``), one at a time.

The predictor is not thread-safe, so jobs run one after another. Each job gets plain arrays and
returns (or yields) plain results; layers are touched only in the callbacks, which napari runs
on the GUI thread.
"""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import numpy as np
from napari.qt.threading import create_worker
from napari.utils import progress
from qtpy.QtCore import Qt

from napari_swinlitemedsam.annotation.annotator_state import SliceKey


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


def load_predictor(name_or_path: str, device: str, disk_cache=None):
    """Load weights (offline) and return ``(BoxPredictor, seconds)``.

    ``disk_cache``: an optional :class:`~napari_swinlitemedsam.inference.disk_cache.DiskEmbeddingCache`
    the predictor reads encoded slices from and stores them in.
    """
    from napari_swinlitemedsam.inference.predictor import BoxPredictor

    started = time.perf_counter()
    predictor = BoxPredictor.from_pretrained(name_or_path, device=device)
    predictor.disk_cache = disk_cache
    return predictor, time.perf_counter() - started


def prepare_image(data, is_stack: bool, window=None) -> np.ndarray:
    """The image as the model sees it: a (D, H, W) stack mapped to uint8 once for all slices;
    a 2D image is returned as it is (the predictor maps its intensities itself).

    ``window``: None for the automatic rule, else a CT window preset name or ``(low, high)``
    bounds, applied to a stack or a grey 2D image (colour images keep their values).
    """
    from napari_swinlitemedsam.inference.pipeline import volume_to_uint8

    array = np.asarray(data)
    if window is not None and (is_stack or array.ndim == 2):
        return volume_to_uint8(array, window=window)
    return volume_to_uint8(array) if is_stack else array


def read_and_prepare(path):
    """Read an image file and map it for the model: returns ``(LoadedImage, prepared)`` where
    ``prepared`` is what :func:`prepare_image` gives for its data."""
    from napari_swinlitemedsam.io.image_files import read_image

    loaded = read_image(path)
    return loaded, prepare_image(loaded.data, loaded.is_stack)


def encode_slice(predictor, image: np.ndarray, slice_index: SliceKey, key: Hashable):
    """Encode one slice into the predictor's cache; returns ``(slice_index, seconds)``."""
    started = time.perf_counter()
    predictor.encode(_plane(image, slice_index), key=key)
    return slice_index, time.perf_counter() - started


def decode_slice(
    predictor, image: np.ndarray, key: Hashable, request: DecodeRequest
) -> DecodeResult:
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


def propagate_object(predictor, volume: np.ndarray, key_boxes: dict, volume_key: Hashable):
    """Follow one object through a (D, H, W) uint8 stack from its key-slice boxes.

    Yields :class:`~napari_swinlitemedsam.inference.volume.SliceResult` per slice; returns
    ``{z: (H, W) bool mask}``. Stops at the next slice when the worker is asked to quit.
    """
    from napari_swinlitemedsam.inference.volume import propagate_from_key_slices

    return (
        yield from propagate_from_key_slices(predictor, volume, key_boxes, volume_key=volume_key)
    )


class GeneratorJobError(Exception):
    """Carries a ``RuntimeError`` out of a generator job: napari's generator workers take a
    ``RuntimeError`` for a deleted worker and swallow it, so the job would never report its end
    (torch raises ``RuntimeError`` for most failures, running out of memory included)."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(str(original))
        self.original = original


def _unless_cancelled(job: Callable, cancelled: threading.Event) -> Callable:
    """``job`` that does nothing when it starts after being cancelled (napari may queue a worker
    for a moment before its thread starts)."""
    if inspect.isgeneratorfunction(job):

        def generator_job(*args):
            if cancelled.is_set():
                return None
            try:
                return (yield from job(*args))
            except RuntimeError as error:
                raise GeneratorJobError(error) from error

        return generator_job

    def function_job(*args):
        return None if cancelled.is_set() else job(*args)

    return function_job


class JobRunner:
    """Starts jobs one at a time in napari thread workers and knows which one is running.

    ``on_idle`` is called (on the GUI thread) after each job finishes, so the owner can start
    the next one; ``on_error`` receives any exception a job raised. Callbacks of a cancelled
    job, or of any job once the runner is closed, are skipped.
    """

    def __init__(self, on_idle: Callable[[], None], on_error: Callable[[Exception], None]) -> None:
        self._on_idle = on_idle
        self._on_error = on_error
        self._worker = None
        self._cancelled = threading.Event()
        self._ended = threading.Event()
        self.kind = ""
        self.jobs_started = 0
        self._closed = False

    @property
    def busy(self) -> bool:
        return self._worker is not None

    def start(
        self,
        kind: str,
        job: Callable,
        args: tuple,
        on_return: Callable | None = None,
        on_yield: Callable | None = None,
        on_done: Callable[[], None] | None = None,
    ) -> None:
        """Run ``job(*args)`` in a worker thread; callbacks run on the GUI thread."""
        if self._closed:
            return
        if self._worker is not None:
            raise RuntimeError(f"a {self.kind} job is still running")
        cancelled, ended = threading.Event(), threading.Event()
        # Errors go to on_error (a napari notification), not re-raised on the GUI thread.
        worker = create_worker(
            _unless_cancelled(job, cancelled), *args, _start_thread=False, _ignore_errors=True
        )
        self._worker, self.kind = worker, kind
        self.jobs_started += 1
        self._cancelled, self._ended = cancelled, ended
        # Set from the worker thread itself, so close() can wait without an event loop.
        worker.finished.connect(ended.set, Qt.ConnectionType.DirectConnection)
        if on_return is not None:
            worker.returned.connect(self._guard(on_return, cancelled))
        if on_yield is not None:
            worker.yielded.connect(self._guard(on_yield, cancelled))
        worker.errored.connect(
            self._guard(lambda error: self._on_error(getattr(error, "original", error)), cancelled)
        )
        worker.finished.connect(lambda: self._finished(worker, on_done))
        worker.start()

    def _guard(self, callback: Callable, cancelled: threading.Event) -> Callable:
        def guarded(value):
            if not self._closed and not cancelled.is_set():
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
        """Drop the running job's results; a propagation also stops at its next slice."""
        if self._worker is not None:
            self._cancelled.set()
            self._worker.quit()

    def stop(self) -> None:
        """Ask a generator job to stop at its next step, keeping what it has yielded."""
        if self._worker is not None:
            self._worker.quit()

    def close(self, timeout_s: float = 30.0) -> bool:
        """Stop calling back, cancel the job and wait for its thread; True when none is left.

        A job whose thread has not started yet is not waited for: it will return at once.
        """
        self._closed = True
        worker = self._worker
        if worker is None:
            return True
        self._cancelled.set()
        worker.quit()
        if not worker.is_running:
            return True
        return self._ended.wait(timeout_s)


class JobProgress:
    """The napari progress bar of a :class:`JobRunner`'s current job (at most one at a time)."""

    def __init__(self, runner: JobRunner) -> None:
        self.runner = runner
        self.bar = None

    def show(self, text: str, total: int = 0) -> None:
        """Show a bar for the job just started; call it after ``runner.start`` (napari's bar may
        process events, and a nested scheduling must find the runner busy)."""
        self.end()
        job = self.runner.jobs_started
        bar = progress(total=total, desc=text)
        if self.runner.busy and self.runner.jobs_started == job:
            self.bar = bar
        else:  # the job already ended while the bar was being shown
            bar.close()

    def advance(self, done: int, total: int) -> None:
        if self.bar is not None:
            self.bar.total = total
            self.bar.update(done - self.bar.n)

    def end(self) -> None:
        if self.bar is not None:
            bar, self.bar = self.bar, None
            bar.close()
