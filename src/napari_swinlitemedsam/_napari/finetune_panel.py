"""The "Fine-tune on my labels" panel: teach the annotator's model the objects labelled so far.

The panel knows nothing of its owner: it is given two callables, one returning the labelled
``(image, labels)`` pairs, one returning a :class:`BaseModel` copy of the model in use (see
``BoxAnnotatorWidget.make_finetune_panel``). It fine-tunes and saves the copy through a
:class:`~._napari.workers.JobRunner` (the work is
:func:`~napari_swinlitemedsam.annotation.finetune_job.run_finetune_job`) and emits ``saved``
with the new file; the owner offers the model and switches to it. Cancel stops at the next step;
nothing is saved then and no layer or model changes.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_swinlitemedsam._napari.workers import JobRunner
from napari_swinlitemedsam.annotation.finetune_job import (
    SAVING,
    BaseModel,
    FinetuneJob,
    count_objects,
    default_model_name,
    run_finetune_job,
    time_left_text,
)
from napari_swinlitemedsam.annotation.jobs import JobKind

DEFAULT_STEPS = 100  # a few minutes on a 2-core CPU with the encoder frozen
MAX_STEPS = 100_000
NOTHING_LABELLED = (
    "Fine-tune: nothing is labelled yet. Label some objects first (draw boxes or paint masks), "
    "then fine-tune."
)

PairSource = Callable[[], "list[tuple[np.ndarray, np.ndarray]]"]


class FinetunePanel(QWidget):
    """Fine-tune a copy of the model in use on the labels made so far.

    Args:
        pairs: returns copies of the labelled ``(image, labels)`` pairs on screen (see
            :func:`~napari_swinlitemedsam.annotation.finetune_job.training_pair`).
        base_model: returns a :class:`BaseModel` copy of the model in use, or None when no
            model is loaded yet.
        extra_pairs: optional callable returning more ``(image, labels)`` pairs (e.g. the
            already-labelled items of a series); also settable later as an attribute.
        model_dir: where the model is saved; default: the user model folder at the time of the
            run (``$SWINLITEMEDSAM_MODEL_DIR`` or the platform's data folder).

    ``saved`` is emitted with the ``.pth`` path after a successful run.
    """

    saved = Signal(object)

    def __init__(
        self,
        pairs: PairSource,
        base_model: Callable[[], BaseModel | None],
        extra_pairs: PairSource | None = None,
        model_dir: Path | None = None,
    ) -> None:
        super().__init__()
        self.pairs = pairs
        self.base_model = base_model
        self.extra_pairs = extra_pairs
        self.model_dir = model_dir
        self.runner = JobRunner(on_error=self._on_error)
        self._job: FinetuneJob | None = None
        self._cancel_requested = False
        self._closed = False
        self._build_ui()
        # Closing the panel or the window stops a run (nothing is saved).
        self.destroyed.connect(lambda *_: self._stop_worker())

    # ------------------------------------------------------------------ UI
    def _build_ui(self) -> None:
        self.start_button = QPushButton("Fine-tune on my labels")
        self.start_button.setToolTip(
            "Teach the current model the objects labelled so far (masks layer of the annotated "
            "image); the result is saved as a new model and used from then on."
        )
        self.name_edit = QLineEdit(default_model_name(datetime.now()))
        self.name_edit.setToolTip("File name of the new model: letters, digits, '.', '_', '-'")
        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(1, MAX_STEPS)
        self.steps_spin.setValue(DEFAULT_STEPS)
        self.steps_spin.setToolTip("Training steps (one image view with up to 4 objects each)")
        self.encoder_box = QCheckBox("Also train the image encoder (slower)")
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, DEFAULT_STEPS)
        self.progress_bar.setValue(0)
        self.progress_bar.setFormat("%v / %m steps")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.status_label = QLabel("Label some objects, then fine-tune the model on them.")
        self.status_label.setWordWrap(True)

        form = QFormLayout()
        form.addRow("New model name", self.name_edit)
        form.addRow("Steps", self.steps_spin)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.encoder_box)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status_label)
        layout.addStretch(1)

        self.start_button.clicked.connect(lambda *_: self.start())
        self.cancel_button.clicked.connect(lambda *_: self.cancel())

    def _set_running(self, running: bool) -> None:
        for control in (self.start_button, self.name_edit, self.steps_spin, self.encoder_box):
            control.setEnabled(not running)
        self.cancel_button.setEnabled(running)

    @property
    def is_running(self) -> bool:
        """True from the start of a run until its worker thread has finished."""
        return self.runner.busy

    # ------------------------------------------------------------------ start
    def training_pairs(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Copies of the annotated image and its masks (when any object is labelled), then
        copies of the pairs from ``extra_pairs``; pairs without any object are left out."""
        pairs = list(self.pairs())
        if self.extra_pairs is not None:
            pairs.extend(
                (np.array(image), np.array(labels)) for image, labels in self.extra_pairs()
            )
        return [(image, labels) for image, labels in pairs if np.any(labels)]

    def start(self) -> bool:
        """Check the inputs, copy the model and the labels, and start fine-tuning in a worker.

        Returns False (and tells the user why) when it cannot start.
        """
        if self.is_running or self._closed:
            return False
        try:
            job = self._make_job()
        except ValueError as error:  # FinetuneError included: names and data the user can fix
            self._refuse(f"Fine-tune: {error}")
            return False
        if job is None:
            return False
        self._job, self._cancel_requested = job, False
        self._set_running(True)
        self.progress_bar.setRange(0, job.steps)
        self.progress_bar.setValue(0)
        count = len(job.images)
        self.status_label.setText(
            f"Preparing {job.card['objects']} objects from {count} image{'s' * (count != 1)}..."
        )
        self.runner.start(
            JobKind.FINETUNE,
            run_finetune_job,
            (job,),
            on_yield=self._on_progress,
            on_done=self._on_finished,
        )
        return True

    def _refuse(self, text: str) -> None:
        self.status_label.setText(text)
        show_info(text)

    def _make_job(self) -> FinetuneJob | None:
        """The job for the current inputs, or None after telling the user what is missing."""
        pairs = self.training_pairs()
        if not pairs:
            self._refuse(NOTHING_LABELLED)
            return None
        from napari_swinlitemedsam.model.checkpoint import default_model_dir
        from napari_swinlitemedsam.training.finetune import check_model_name

        name = check_model_name(self.name_edit.text().strip())
        folder = Path(self.model_dir) if self.model_dir is not None else default_model_dir()
        if (folder / f"{name}.pth").exists():
            raise ValueError(
                f"a model called '{name}' already exists in {folder}; choose another name"
            )
        base = self.base_model()
        if base is None:
            self._refuse(
                "Fine-tune: no model is loaded yet; wait until it is ready (or choose one)."
            )
            return None
        images, labels = [image for image, _ in pairs], [label_map for _, label_map in pairs]
        card = {
            "base_model": base.name_or_path,
            "base_label": base.label,
            "network": base.network,
            "images": len(images),
            "objects": count_objects(labels),
            "steps": self.steps_spin.value(),
            "train_encoder": self.encoder_box.isChecked(),
            "date": datetime.now(timezone.utc).date().isoformat(),
            "made_with": "napari widget: Fine-tune on my labels",
        }
        return FinetuneJob(
            state=base.state,
            network=base.network,
            prompts=base.prompts,
            device=base.device,
            images=images,
            labels=labels,
            steps=self.steps_spin.value(),
            train_encoder=self.encoder_box.isChecked(),
            name=name,
            card=card,
            model_dir=folder,
        )

    # ------------------------------------------------------------------ progress and the end
    def _on_progress(self, progress) -> None:
        if self._closed:
            return
        if progress == SAVING:
            self.cancel_button.setEnabled(False)
            self.status_label.setText("Saving the fine-tuned model...")
            return
        self.progress_bar.setValue(progress.step)
        left = time_left_text(progress.seconds, progress.step, progress.total)
        self.status_label.setText(
            f"Step {progress.step}/{progress.total}, loss {progress.loss:.4f}, {left}"
        )

    def cancel(self) -> None:
        """Stop the run at its next step; nothing is saved and nothing else changes."""
        if not self.runner.busy or not self.cancel_button.isEnabled():
            return
        self._cancel_requested = True
        self.cancel_button.setEnabled(False)
        self.status_label.setText("Cancelling after the current step...")
        self.runner.stop()  # its end is still reported: the saved file decides what happened

    def _on_error(self, error: Exception) -> None:
        if self._closed:
            return
        text = f"Fine-tune failed: {error}"
        self.status_label.setText(text)
        show_error(text)

    def _on_finished(self) -> None:
        """The run ended: success is judged by the file on disk (a Cancel that came while the
        files were being written does not hide a saved model)."""
        job, self._job = self._job, None
        if self._closed or job is None:
            return
        self._set_running(False)
        if job.saved_path is not None:
            self._announce(job)
        elif self._cancel_requested:
            self.progress_bar.setValue(0)
            self.status_label.setText("Fine-tuning cancelled; nothing was saved.")
            show_info("Fine-tuning cancelled; nothing was saved.")

    def _announce(self, job: FinetuneJob) -> None:
        """Tell the user where the model is and emit ``saved`` (the owner switches to it)."""
        path = Path(job.saved_path)
        loss = job.losses[-1] if job.losses else float("nan")
        text = (
            f"Fine-tuned model saved to {path} (last loss {loss:.4f}); the annotator now uses it."
        )
        self.status_label.setText(text)
        show_info(text)
        taken = {p.stem for p in path.parent.glob("*.pth")}
        self.name_edit.setText(default_model_name(datetime.now(), taken))
        self.saved.emit(path)

    # ------------------------------------------------------------------ closing
    def _stop_worker(self) -> None:
        """Stop calling back and ask a running job to stop, without waiting (touches no Qt
        widget: safe while the panel is being destroyed)."""
        self._closed = True
        self.runner.close(timeout_s=0)

    def close_panel(self, timeout_s: float = 60.0) -> bool:
        """Cancel a run and wait for its thread; True when no thread is left."""
        self._closed = True
        return self.runner.close(timeout_s)
