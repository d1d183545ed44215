"""The "Box annotator" dock widget: controls and status around an :class:`Annotator`.

Draw a rectangle on the box layer and the object's mask appears in the mask layer. All model
work runs in background threads; this widget only sets options and shows what is happening.
"""

from __future__ import annotations

from pathlib import Path

from magicgui.widgets import ComboBox, Container
from napari.layers import Image, Labels
from napari.utils.notifications import show_error
from qtpy.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QVBoxLayout,
    QWidget,
)

from napari_swinlitemedsam._napari.annotation_options import AnnotationOptions
from napari_swinlitemedsam._napari.annotator import Annotator
from napari_swinlitemedsam._napari.class_list_panel import CLASS_KEYS, ClassListPanel
from napari_swinlitemedsam._napari.finetune_panel import FinetunePanel
from napari_swinlitemedsam._napari.foldable_section import FoldableSection
from napari_swinlitemedsam._napari.layer_io import ImageLayerError
from napari_swinlitemedsam._napari.model_download_row import ModelDownloadRow
from napari_swinlitemedsam._napari.model_list import ModelList
from napari_swinlitemedsam._napari.object_panel import ObjectPanel
from napari_swinlitemedsam._napari.series_classes import SeriesClasses
from napari_swinlitemedsam._napari.series_panel import SeriesPanel
from napari_swinlitemedsam._napari.storage_row import StorageRow
from napari_swinlitemedsam._napari.workers import JobRunner
from napari_swinlitemedsam.annotation.finetune_job import BaseModel, copy_base_model, training_pair
from napari_swinlitemedsam.annotation.jobs import JobKind
from napari_swinlitemedsam.annotation.model_choices import (
    BUNDLED,
    DEVICES,
    PRECISIONS,
    ModelChoice,
    available_models,
)

NEW_LABELS = "(new layer)"
AUTO_WINDOW = "auto"
DISPLAYED = "displayed"
# What the model sees of the intensities (inference/intensity.py has the presets and the rule).
WINDOW_CHOICES = (
    ("auto (CT: soft tissue; else percentiles)", AUTO_WINDOW),
    ("CT soft tissue W400 L40", "soft_tissue"),
    ("CT lung W1500 L-600", "lung"),
    ("CT bone W1800 L400", "bone"),
    ("CT brain W80 L40", "brain"),
    ("as displayed (contrast limits)", DISPLAYED),
)
MAX_WIDTH = 380

SHORTCUTS = (
    ("Shift-G", "propagate the active object through the stack"),
    ("Shift-X", "stop a running propagation"),
    ("Shift-K", "new boxes add key slices to the active object (on/off)"),
    ("Shift-O", "let new masks overwrite other objects (on/off)"),
    ("Shift-C", "switch clicks between + (add) and - (remove)"),
    ("Alt-1", "make the first class active (Alt-2 .. Alt-9: the next ones)"),
    ("Alt-0", "no active class: new boxes stay unclassified"),
)
"""Viewer shortcuts the widget binds; none of them is a napari default."""


def shortcut_help() -> str:
    lines = [f"{key}: {text}" for key, text in SHORTCUTS]
    return (
        "Draw a rectangle (R) on the boxes layer: each box is one object.\n"
        "Move or resize it to re-segment; delete it (Delete) to remove its mask.\n"
        "Ctrl+Z / Ctrl+Shift+Z on the masks layer undo and redo model output and painting.\n"
        "Click points (P) inside a box on the clicks layer to refine that object.\n\n"
        + "\n".join(lines)
    )


class BoxAnnotatorWidget(QWidget):
    """Dock widget: image, masks layer, model, device, precision, options, actions and status.

    The form controls are magicgui widgets (``image_choice``, ``labels_choice``,
    ``model_choice``, ``device_choice``, ``precision_choice``) in one magicgui ``Container``
    (``form``): the layer choosers list the viewer's layers by themselves whenever
    :meth:`reset_choices` runs (napari calls it for docked widgets when layers change; the
    widget also asks for it). More controls go into ``form`` with ``form.append``.
    """

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.annotator = Annotator(napari_viewer, on_status=self._show_status)
        self.jobs = JobRunner()  # background work of the widget itself (finding models...)
        self._bound_keys: list[str] = []
        self._closed = False
        self._refreshing = False
        self._build_ui()
        self.setToolTip(shortcut_help())
        self._bind_keys()
        # When napari deletes the window, stop the worker and release the viewer's shortcuts.
        self.destroyed.connect(lambda *_: self.close_annotator())
        # Plain functions, not bound methods: napari keeps a method as a weak reference to
        # this widget, and disconnecting it from ``destroyed`` (the Qt object already gone)
        # compares that reference and fails on napari 0.5.
        events = napari_viewer.layers.events
        self._layer_handlers = [
            (events.inserted, lambda event: self._on_layer_inserted(event)),
            (events.removed, lambda event: self.reset_choices()),
            (events.reordered, lambda event: self.reset_choices()),
        ]
        for emitter, handler in self._layer_handlers:
            emitter.connect(handler)
        self.model_list.changed()
        self.reset_choices()
        if self.annotator.image is None and self.image_choice.value is not None:
            self._attach(self.image_choice.value, None)
        # Finding the other models imports torch: done in a worker, the window stays responsive.
        self.jobs.start(
            JobKind.DISCOVER_MODELS,
            available_models,
            (),
            on_return=self.model_list.add_found,
            on_error=self.model_list.discovery_failed,
        )

    # ------------------------------------------------------------------ UI
    def _build_ui(self) -> None:
        self.image_choice = ComboBox(label="Image", choices=self._image_layers)
        self.labels_choice = ComboBox(label="Masks", choices=self._labels_layers, nullable=True)
        self.model_choice = ComboBox(label="Model")
        self.device_choice = ComboBox(label="Device", choices=DEVICES, value=DEVICES[0])
        self.precision_choice = ComboBox(label="Precision", choices=PRECISIONS, value=PRECISIONS[0])
        self.precision_choice.tooltip = (
            "Arithmetic of the image encoder: auto (bf16 only on CPUs with native bfloat16 "
            "units and where masks agree; fp32 elsewhere; on a CUDA GPU fp16 is checked too), "
            "fp32, bf16 (slower where it is emulated) or fp16 (CUDA GPUs only)"
        )
        self.window_choice = ComboBox(
            label="Intensity", choices=list(WINDOW_CHOICES), value=AUTO_WINDOW
        )  # "auto" is a value of its own: magicgui shows a None value as an empty choice
        self.window_choice.tooltip = (
            "What the model sees of the intensities: the automatic rule, a CT window, or the "
            "image layer's contrast limits at the moment of choosing"
        )
        self.download_row = ModelDownloadRow(
            lambda choice: self.model_list.downloaded(choice), self
        )
        self.model_list = ModelList(
            self.model_choice,
            self.annotator,
            self.download_row,
            self.device_choice,
            self.precision_choice,
            self,
        )
        self.model_choice.choices = self.model_list.entries
        self.model_choice.value = BUNDLED.name_or_path
        self.form = Container(
            widgets=[
                self.image_choice,
                self.labels_choice,
                self.model_choice,
                self.device_choice,
                self.precision_choice,
                self.window_choice,
            ],
            labels=True,
        )
        self.form.margins = (0, 0, 0, 0)
        # What runs the encoder once a model is loaded: runtime, precision and why (measured on
        # this machine, cached, forced); see inference/runtime_choice.py.
        self.encoder_label = QLabel("-")
        self.encoder_label.setWordWrap(True)
        self.encoder_label.setToolTip(
            "The image encoder's runtime and precision, and why; where boxes are decoded"
        )
        self.options = AnnotationOptions(self.annotator, self)
        self.storage_row = StorageRow(self.annotator, self)
        self.status_label = QLabel("Starting...")
        self.status_label.setWordWrap(True)
        self.help_label = QLabel(shortcut_help())
        self.help_label.setWordWrap(True)
        self.help_label.setStyleSheet("color: gray; font-size: small;")
        self.series_panel = SeriesPanel(self.viewer, self.annotator, self)
        self.finetune_panel = self.make_finetune_panel()
        self.finetune_panel.extra_pairs = self._series_training_pairs
        self.finetune_section = FoldableSection("Fine-tune on my labels", self.finetune_panel)
        self.class_panel = ClassListPanel()
        self.object_panel = ObjectPanel(self.viewer, self.annotator, self.class_panel)
        classes_body = QWidget()
        classes_layout = QVBoxLayout(classes_body)
        classes_layout.setContentsMargins(0, 0, 0, 0)
        classes_layout.addWidget(self.class_panel)
        classes_layout.addWidget(self.object_panel)
        self.classes_section = FoldableSection("Classes and objects", classes_body)
        self.series_panel.series_classes = SeriesClasses(self.class_panel, self.object_panel)
        self.setMaximumWidth(MAX_WIDTH)

        layout = QVBoxLayout(self)
        layout.addWidget(self.form.native)
        encoder_row = QHBoxLayout()
        encoder_row.addWidget(QLabel("Encoder:"))
        encoder_row.addWidget(self.encoder_label, 1)
        layout.addLayout(encoder_row)
        layout.addWidget(self.download_row)
        layout.addWidget(self.storage_row)
        layout.addWidget(self.options)
        layout.addWidget(self.series_panel)
        layout.addWidget(self.classes_section)
        layout.addWidget(self.finetune_section)
        layout.addWidget(self.status_label)
        layout.addWidget(self.help_label)
        layout.addStretch(1)

        self.image_choice.changed.connect(self._image_chosen)
        self.labels_choice.changed.connect(self._labels_chosen)
        for choice in (self.model_choice, self.device_choice, self.precision_choice):
            choice.changed.connect(self.model_list.changed)
        self.window_choice.changed.connect(self._window_chosen)

    def _show_status(self, text: str) -> None:
        self.status_label.setText(text)
        predictor = getattr(getattr(self, "annotator", None), "predictor", None)
        describe = getattr(predictor, "describe_runtimes", None)
        self.encoder_label.setText(describe() if describe is not None else "-")
        if hasattr(self, "storage_row"):  # statuses come while the form is being built
            self.storage_row.show_state()

    # ------------------------------------------------------------------ layers
    def _image_layers(self, widget=None) -> list[tuple[str, Image]]:
        return [(layer.name, layer) for layer in self.viewer.layers if isinstance(layer, Image)]

    def _labels_layers(self, widget=None) -> list[tuple[str, Labels | None]]:
        labels = [layer for layer in self.viewer.layers if isinstance(layer, Labels)]
        return [(NEW_LABELS, None)] + [(layer.name, layer) for layer in labels]

    def reset_choices(self, event=None) -> None:
        """List the viewer's layers again, showing the image and masks being annotated."""
        if self._closed:
            return
        self._refreshing = True  # choices that change on their own choose nothing
        listing, self.model_list.refreshing = self.model_list.refreshing, True
        try:
            self.form.reset_choices()
            annotator = self.annotator
            if annotator.image is not None and annotator.image in self.image_choice.choices:
                self.image_choice.value = annotator.image
            if annotator.labels in self.labels_choice.choices:
                self.labels_choice.value = annotator.labels
        finally:
            self._refreshing = False
            self.model_list.refreshing = listing

    def _on_layer_inserted(self, event) -> None:
        """A new image is annotated when nothing is (not while a series replaces its item)."""
        self.reset_choices()
        session = self.series_panel.session
        if session is not None and session.replacing:
            return  # the series shows another item and attaches it itself
        if self.annotator.image is None and isinstance(event.value, Image):
            self._attach(event.value, None)

    def _image_chosen(self, image=None) -> None:
        image = self.image_choice.value
        if not self._refreshing and image is not None and image is not self.annotator.image:
            self._attach(image, None)

    def _labels_chosen(self, labels=None) -> None:
        labels = self.labels_choice.value
        if self._refreshing or self.annotator.image is None:
            return
        if labels is None or labels is not self.annotator.labels:
            self._attach(self.annotator.image, labels)

    def _attach(self, image: Image, labels: Labels | None) -> None:
        """Annotate ``image`` into ``labels`` (a new layer when None)."""
        try:
            self.annotator.attach(image, labels)
        except ImageLayerError as error:
            self._show_status(str(error))
            show_error(str(error))
        self.reset_choices()

    def _series_training_pairs(self) -> list:
        """``(image, labels)`` of the other items of the open series that have saved labels
        with objects (the item on screen comes from the annotator's layers)."""
        session = self.series_panel.session
        if session is None:
            return []
        series, pairs = session.series, []
        for index in range(len(series)):
            labels = None if index == session.current else series.saved_labels(index)
            if labels is not None and labels.any():
                pairs.append((series.read(index).data, labels))
        return pairs

    # ------------------------------------------------------------------ model
    @property
    def _models(self) -> list[ModelChoice]:
        return self.model_list.choices

    def offer_model(self, choice: ModelChoice) -> None:
        """List ``choice`` (before "Choose file...") unless a model of that file is listed."""
        self.model_list.offer(choice)

    def use_model(self, path) -> None:
        """List a model file saved meanwhile (e.g. fine-tuned) and switch the annotator to it."""
        self.model_list.use_file(path)

    def _window_chosen(self, value=None) -> None:
        """Give the model the chosen window; "as displayed" takes the image layer's contrast
        limits at the moment of choosing."""
        window = self.window_choice.value
        if window == AUTO_WINDOW:
            window = None
        elif window == DISPLAYED:
            image = self.annotator.image
            window = None if image is None else tuple(image.contrast_limits)
        self.annotator.set_window(window)

    def make_finetune_panel(self, model_dir: Path | None = None) -> FinetunePanel:
        """A "Fine-tune on my labels" panel for this annotator (the widget holds one already;
        more may be docked on their own): it trains on the annotated layers, and the model it
        saves is listed and used here."""
        panel = FinetunePanel(self._annotated_pair, self._base_model, model_dir=model_dir)
        panel.saved.connect(self.use_model)
        return panel

    def _annotated_pair(self) -> list:
        """The annotated image and its masks as one training pair (none when unlabelled)."""
        annotator = self.annotator
        if annotator.image is None or annotator.labels is None:
            return []
        pair = training_pair(annotator.image.data, annotator.labels.data, annotator.image.rgb)
        return [] if pair is None else [pair]

    def _base_model(self) -> BaseModel | None:
        annotator = self.annotator
        if annotator.predictor is None or annotator.model_source is None:
            return None
        source = annotator.model_source
        return copy_base_model(annotator.predictor, source.name_or_path, source.label)

    def set_disk_cache(self, disk_cache) -> None:
        """Read and store encoded slices in ``disk_cache`` (a DiskEmbeddingCache; None: none)."""
        self.annotator.set_disk_cache(disk_cache)
        self.series_panel.show_cache_folder()

    # ------------------------------------------------------------------ shortcuts
    def _bind_keys(self) -> None:
        actions = {
            "Shift-G": lambda viewer: self.annotator.propagate(),
            "Shift-X": lambda viewer: self.annotator.cancel(),
            "Shift-K": lambda viewer: self.options.key_slice_box.toggle(),
            "Shift-O": lambda viewer: self.options.overwrite_box.toggle(),
            "Shift-C": lambda viewer: self.options.toggle_click_sign(),
        }
        for number, key in enumerate(CLASS_KEYS):
            actions[key] = lambda viewer, n=number: self.class_panel.pick_by_key(n)
        for key, action in actions.items():
            try:
                self.viewer.bind_key(key, action)
            except ValueError:  # already bound in this viewer (e.g. a second annotator)
                continue
            self._bound_keys.append(key)

    def close_annotator(self) -> bool:
        """Stop background work and release the viewer's shortcuts; True when no thread is left.

        Touches no Qt object, so it can run while the widget is being destroyed.
        """
        if self._closed:
            return True
        self._closed = self.model_list.closed = True
        self.series_panel.shut_down()  # saves the series' masks
        finetune_ended = self.finetune_panel.close_panel()
        download_ended = self.download_row.close_row()
        self.jobs.close()
        self.object_panel.close_panel()
        for key in self._bound_keys:
            self.viewer.bind_key(key, None)
        self._bound_keys.clear()
        for emitter, handler in self._layer_handlers:
            emitter.disconnect(handler)
        return self.annotator.close() and finetune_ended and download_ended
