"""The widget's model download: ask once, download in a worker with progress and Cancel.

The download itself is ``io.model_download.fetch_model`` (a generator: verified, atomic,
removes its partial file when closed). Here it runs in a napari worker; the napari progress bar
and the status text follow it, and Cancel closes the generator at its next chunk.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from napari.qt.threading import create_worker
from napari.utils import progress
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtWidgets import QHBoxLayout, QLabel, QMessageBox, QPushButton, QWidget

from napari_swinlitemedsam.annotation.model_choices import ModelChoice


def _download_job(name: str, urls, cancelled: threading.Event, ended: threading.Event):
    """Yield ``fetch_model``'s progress; stop (removing the partial file) once ``cancelled``;
    set ``ended`` when the thread is done with the file."""
    from napari_swinlitemedsam.io.model_download import fetch_model

    steps = fetch_model(name, urls=urls)
    try:
        while True:
            if cancelled.is_set():
                return None
            try:
                yield next(steps)
            except StopIteration as finished:
                return finished.value
    finally:
        steps.close()
        ended.set()


def ask_with_dialog(parent: QWidget, question: str) -> bool:
    answer = QMessageBox.question(parent, "Download model", question)
    return answer == QMessageBox.StandardButton.Yes


class ModelDownloadRow(QWidget):
    """ "Downloading ... [Cancel]", shown only while a download runs.

    ``on_installed(choice)`` runs on the GUI thread with the model's now loadable entry;
    ``ask(question)`` returns whether to go ahead (a dialog; tests replace it); ``urls``
    replaces the registry's sources (a mirror, or a test server).
    """

    def __init__(self, on_installed: Callable[[ModelChoice], None], parent=None) -> None:
        super().__init__(parent)
        self.on_installed = on_installed
        self.ask: Callable[[str], bool] = lambda question: ask_with_dialog(self, question)
        self.urls: list[str] | None = None
        self.worker = None
        self._cancelled = threading.Event()
        self._ended = threading.Event()
        self._closing = False
        self._bar = None
        self.label = QLabel()
        self.cancel_button = QPushButton("Cancel download")
        self.cancel_button.clicked.connect(lambda *_: self.cancel())
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.label, 1)
        row.addWidget(self.cancel_button)
        self.hide()

    @property
    def busy(self) -> bool:
        return self.worker is not None

    def offer(self, choice: ModelChoice) -> bool:
        """Ask once, then start downloading ``choice``; False when declined or already busy."""
        from napari_swinlitemedsam.io.model_download import target_path
        from napari_swinlitemedsam.model.registry import get_weights

        if self.busy:
            return False
        entry = get_weights(choice.name_or_path)
        source = (self.urls or list(entry.urls))[0]
        size = f"about {entry.approx_mb} MB" if entry.approx_mb else "the file"
        question = (
            f"Download {entry.label} ({size}, licence {entry.licence}) from\n{source}\n"
            f"into {target_path(entry)}?"
        )
        if not self.ask(question):
            return False
        self._cancelled = threading.Event()
        self._ended = threading.Event()
        self._bar = progress(total=0, desc=f"Downloading {entry.label}")
        self.label.setText(f"Downloading {entry.label}...")
        self.cancel_button.setEnabled(True)
        self.show()
        worker = create_worker(
            _download_job,
            entry.name,
            self.urls,
            self._cancelled,
            self._ended,
            _start_thread=False,
            _ignore_errors=True,  # errors are shown by _failed, not raised on the GUI thread
        )
        worker.yielded.connect(self._advance)
        worker.returned.connect(lambda installed: self._returned(choice, entry, installed))
        worker.errored.connect(self._failed)
        worker.finished.connect(self._finished)
        self.worker = worker
        worker.start()
        return True

    def cancel(self) -> None:
        """Stop the download at its next chunk; the partial file is removed."""
        self._cancelled.set()
        self.cancel_button.setEnabled(False)
        self.label.setText("Cancelling the download...")

    def close_row(self, timeout_s: float = 10.0) -> bool:
        """Cancel and wait for the worker (the widget is closing); True when none is left."""
        self._closing = True
        if self.worker is None:
            return True
        self._cancelled.set()
        return self._ended.wait(timeout_s)

    def _advance(self, step) -> None:
        if self._bar is None:
            return
        if step.total and self._bar.total != step.total:
            self._bar.total = step.total
        self._bar.n = step.done
        self._bar.refresh()
        done = f"{step.done / 1e6:.0f}"
        total = f" of {step.total / 1e6:.0f}" if step.total else ""
        self.label.setText(f"Downloading: {done}{total} MB")

    def _returned(self, choice: ModelChoice, entry, installed) -> None:
        if self._closing:
            return
        if installed is None:
            show_info(f"{entry.label} download cancelled; nothing was installed.")
            return
        for warning in installed.warnings:
            show_warning(warning)
        self.on_installed(ModelChoice(entry.label, choice.name_or_path))

    def _failed(self, error: Exception) -> None:
        if self._closing:
            return
        show_error(f"Model download failed: {error}")

    def _finished(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self.worker = None
        if not self._closing:  # a closing widget may already be half destroyed
            self.hide()
