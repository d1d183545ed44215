"""The one way this plugin runs work off the GUI thread: :class:`JobRunner`.

Every background job (the annotator's model jobs, fine-tuning, looking for models, downloads)
runs through a runner: one job at a time per runner, started as a napari thread worker
(``napari.qt.threading.create_worker``), with one lifecycle (start, results and progress on the
GUI thread, end) and one cancel path (:meth:`JobRunner.cancel`, :meth:`JobRunner.close`). The
work itself is a plain function or generator of a lower layer (e.g.
:mod:`~napari_swinlitemedsam.annotation.slice_work`); layers are touched only in the callbacks.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable

from napari.qt.threading import create_worker
from napari.utils import progress
from qtpy.QtCore import Qt

from napari_swinlitemedsam.annotation.jobs import JobKind


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
    the next one; ``on_error`` receives any exception a job raised (``kind`` still names the
    failed job while it runs). Callbacks of a cancelled job, or of any job once the runner is
    closed, are skipped.
    """

    def __init__(
        self,
        on_idle: Callable[[], None] = lambda: None,
        on_error: Callable[[Exception], None] = lambda error: None,
    ) -> None:
        self._on_idle = on_idle
        self._on_error = on_error
        self._worker = None
        self._cancelled = threading.Event()
        self._ended = threading.Event()
        self.kind: JobKind | None = None
        self.jobs_started = 0
        self._closed = False

    @property
    def busy(self) -> bool:
        return self._worker is not None

    @property
    def worker(self):
        """The napari worker of the running job (None when idle), e.g. to pause it."""
        return self._worker

    def start(
        self,
        kind: JobKind,
        job: Callable,
        args: tuple,
        on_return: Callable | None = None,
        on_yield: Callable | None = None,
        on_done: Callable[[], None] | None = None,
        on_error: Callable[[Exception], None] | None = None,
    ) -> None:
        """Run ``job(*args)`` (a function, or a generator whose values go to ``on_yield``) in a
        worker thread; the callbacks run on the GUI thread, ``on_done`` after every end.
        ``on_error``: for this job's exception (default: the runner's ``on_error``)."""
        if self._closed:
            return
        if self._worker is not None:
            raise RuntimeError(f"{self.kind.value} is still running")
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
        report = on_error if on_error is not None else self._on_error
        worker.errored.connect(
            self._guard(lambda error: report(getattr(error, "original", error)), cancelled)
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
            self._worker, self.kind = None, None
        if self._closed:
            return
        if on_done is not None:
            on_done()
        self._on_idle()

    def cancel(self) -> None:
        """Drop the running job's results; a generator job also stops at its next step."""
        if self._worker is not None:
            self._cancelled.set()
            self._worker.quit()

    def stop(self) -> None:
        """Ask a generator job to stop at its next step, keeping what it has yielded."""
        if self._worker is not None:
            self._worker.quit()

    def close(self, timeout_s: float = 30.0) -> bool:
        """Stop calling back, cancel the job and wait for its thread (without polling: the
        thread itself signals its end); True when none is left.

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
