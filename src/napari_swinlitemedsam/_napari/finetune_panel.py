"""The "Fine-tune on my labels" panel: teach the annotator's model the objects labelled so far.

Embed it under a :class:`~._widget.BoxAnnotatorWidget` (``FinetunePanel(box_widget)``) or dock
it on its own. It takes the annotator's image and masks layers (plus any ``extra_pairs``),
copies the current model's weights on the GUI thread, fine-tunes and saves the copy in a napari
thread worker (:mod:`._finetune_job`), then offers the new model in the widget's model list and
switches the annotator to it. Cancel stops at the next step; nothing is saved then and no layer
or model changes.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from napari.qt.threading import create_worker
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

from napari_swinlitemedsam.annotation.finetune_job import (
    SAVING,
    FinetuneJob,
    count_objects,
    default_model_name,
    run_finetune_job,
    time_left_text,
    training_pair,
)
from napari_swinlitemedsam.annotation.model_choices import CHOOSE_FILE, own_weights_choice

DEFAULT_STEPS = 100  # a few minutes on a 2-core CPU with the encoder frozen
MAX_STEPS = 100_000
NOTHING_LABELLED = (
    "Fine-tune: nothing is labelled yet. Label some objects first (draw boxes or paint masks), "
    "then fine-tune."
)

PairSource = Callable[[], "list[tuple[np.ndarray, np.ndarray]]"]


class FinetunePanel(QWidget):
    """Fine-tune the model of ``box_widget``'s annotator on the labels made so far.

    Args:
        box_widget: the :class:`~._widget.BoxAnnotatorWidget` whose annotator, model list and
            device choice are used.
        extra_pairs: optional callable returning more ``(image, labels)`` pairs (e.g. the
            already-labelled items of a series), each as accepted by ``finetune``; also settable
            later as the ``extra_pairs`` attribute.
        model_dir: where the model is saved; default: the user model folder at the time of the
            run (``$SWINLITEMEDSAM_MODEL_DIR`` or the platform's data folder).

    ``saved`` is emitted with the ``.pth`` path after a successful run.
    """

    saved = Signal(object)

    def __init__(
        self,
        box_widget,
        extra_pairs: PairSource | None = None,
        model_dir: Path | None = None,
    ) -> None:
        super().__init__()
        self.box_widget = box_widget
        self.extra_pairs = extra_pairs
        self.model_dir = model_dir
        self._worker = None
        self._job: FinetuneJob | None = None
        self._cancel_requested = False
        self._closed = False
        self._build_ui()
        # Closing the panel, the annotator widget or the window stops a run (nothing is saved).
        self.destroyed.connect(lambda *_: self._stop_worker())
        box_widget.destroyed.connect(lambda *_: self._stop_worker())

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
        return self._worker is not None

    # ------------------------------------------------------------------ start
    def training_pairs(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Copies of the annotated image and its masks (when any object is labelled), then
        copies of the pairs from ``extra_pairs``; pairs without any object are left out."""
        annotator = self.box_widget.annotator
        pairs = []
        if annotator.image is not None and annotator.labels is not None:
            pair = training_pair(annotator.image.data, annotator.labels.data, annotator.image.rgb)
            if pair is not None:
                pairs.append(pair)
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
        worker = create_worker(run_finetune_job, job, _start_thread=False, _ignore_errors=True)
        worker.yielded.connect(self._on_progress)
        worker.errored.connect(self._on_error)
        worker.finished.connect(lambda: self._on_finished(worker))
        self._worker = worker
        self._set_running(True)
        self.progress_bar.setRange(0, job.steps)
        self.progress_bar.setValue(0)
        count = len(job.images)
        self.status_label.setText(
            f"Preparing {job.card['objects']} objects from {count} image{'s' * (count != 1)}..."
        )
        worker.start()
        return True

    def _refuse(self, text: str) -> None:
        self.status_label.setText(text)
        show_info(text)

    def _make_job(self) -> FinetuneJob | None:
        """The job for the current inputs, or None after telling the user what is missing."""
        annotator = self.box_widget.annotator
        pairs = self.training_pairs()
        if not pairs:
            self._refuse(NOTHING_LABELLED)
            return None
        from napari_swinlitemedsam.model.checkpoint import default_model_dir
        from napari_swinlitemedsam.model.registry import MODEL_SPECS
        from napari_swinlitemedsam.training.finetune import check_model_name

        name = check_model_name(self.name_edit.text().strip())
        folder = Path(self.model_dir) if self.model_dir is not None else default_model_dir()
        if (folder / f"{name}.pth").exists():
            raise ValueError(
                f"a model called '{name}' already exists in {folder}; choose another name"
            )
        predictor = annotator.predictor
        if predictor is None:
            self._refuse(
                "Fine-tune: no model is loaded yet; wait until it is ready (or choose one)."
            )
            return None
        model = predictor.model
        network = predictor.model_name
        if network not in MODEL_SPECS:
            network = "swin-litemedsam" if model.uses_skips else "litemedsam"
        # The live model is only read here (its forward never writes its tensors), so the copy
        # is safe even while the annotator encodes in its own thread.
        state = {key: value.detach().clone() for key, value in model.state_dict().items()}
        images, labels = [image for image, _ in pairs], [label_map for _, label_map in pairs]
        base_name, base_label = self._base_model()
        card = {
            "base_model": base_name,
            "base_label": base_label,
            "network": network,
            "images": len(images),
            "objects": count_objects(labels),
            "steps": self.steps_spin.value(),
            "train_encoder": self.encoder_box.isChecked(),
            "date": datetime.now(timezone.utc).date().isoformat(),
            "made_with": "napari widget: Fine-tune on my labels",
        }
        return FinetuneJob(
            state=state,
            network=network,
            prompts=predictor.prompts,
            device=str(model.device),
            images=images,
            labels=labels,
            steps=self.steps_spin.value(),
            train_encoder=self.encoder_box.isChecked(),
            name=name,
            card=card,
            model_dir=folder,
        )

    def _base_model(self) -> tuple[str, str]:
        """What the annotator's model was loaded from (a name or a path) and its label."""
        combo, label = self.box_widget.model_combo, self.box_widget.annotator.model_label
        for index in range(combo.count()):
            if combo.itemText(index) == label and combo.itemData(index) is not None:
                return str(combo.itemData(index)), label
        return label, label

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
        if self._worker is None or not self.cancel_button.isEnabled():
            return
        self._cancel_requested = True
        self.cancel_button.setEnabled(False)
        self.status_label.setText("Cancelling after the current step...")
        self._worker.quit()

    def _on_error(self, error: Exception) -> None:
        if self._closed:
            return
        text = f"Fine-tune failed: {error}"
        self.status_label.setText(text)
        show_error(text)

    def _on_finished(self, worker) -> None:
        """The run ended: success is judged by the file on disk (a Cancel that came while the
        files were being written does not hide a saved model)."""
        if worker is not self._worker:
            return
        job, self._worker, self._job = self._job, None, None
        if self._closed:
            return
        self._set_running(False)
        if job.saved_path is not None:
            self._use_new_model(job)
        elif self._cancel_requested:
            self.progress_bar.setValue(0)
            self.status_label.setText("Fine-tuning cancelled; nothing was saved.")
            show_info("Fine-tuning cancelled; nothing was saved.")

    def _use_new_model(self, job: FinetuneJob) -> None:
        """Offer the saved model in the widget's list, switch the annotator to it, tell the user."""
        path = Path(job.saved_path)
        choice = own_weights_choice(path)
        combo = self.box_widget.model_combo
        index = combo.findData(choice.name_or_path)
        if index < 0:
            before = combo.findText(CHOOSE_FILE)
            index = before if before >= 0 else combo.count()
            combo.insertItem(index, choice.label, choice.name_or_path)
        combo.setCurrentIndex(index)
        device = self.box_widget.device_combo.currentText()
        self.box_widget.annotator.set_model(choice.name_or_path, device, choice.label)
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
        """Stop calling back and ask a running job to stop (touches no Qt widget: safe while
        the panel is being destroyed)."""
        self._closed = True
        worker = self._worker
        if worker is not None:
            self._cancel_requested = True
            worker.quit()

    def close_panel(self, timeout_s: float = 60.0) -> bool:
        """Cancel a run and wait for its thread; True when no thread is left."""
        import time

        worker = self._worker
        if worker is None:
            return True
        self._stop_worker()
        deadline = time.monotonic() + timeout_s
        while worker.is_running and time.monotonic() < deadline:
            time.sleep(0.05)
        return not worker.is_running
