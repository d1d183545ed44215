"""The "Box annotator" dock widget: controls and status around an :class:`Annotator`.

Draw a rectangle on the box layer and the object's mask appears in the mask layer. All model
work runs in background threads; this widget only sets options and shows what is happening.
"""

from __future__ import annotations

from napari.layers import Image, Labels
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QRadioButton,
    QVBoxLayout,
    QWidget,
)

from napari_swinlitemedsam._napari.annotator import Annotator
from napari_swinlitemedsam._napari.class_list_panel import CLASS_KEYS, ClassListPanel
from napari_swinlitemedsam._napari.finetune_panel import FinetunePanel
from napari_swinlitemedsam._napari.foldable_section import FoldableSection
from napari_swinlitemedsam._napari.layer_io import ImageLayerError
from napari_swinlitemedsam._napari.model_download_row import ModelDownloadRow
from napari_swinlitemedsam._napari.object_panel import ObjectPanel
from napari_swinlitemedsam._napari.series_classes import SeriesClasses
from napari_swinlitemedsam._napari.series_panel import SeriesPanel
from napari_swinlitemedsam.annotation.model_choices import (
    BUNDLED,
    CHOOSE_FILE,
    DEVICES,
    ModelChoice,
    available_models,
)

NEW_LABELS = "(new layer)"
DISPLAYED = "displayed"
# What the model sees of the intensities (inference/intensity.py has the presets and the rule).
WINDOW_CHOICES = (
    ("auto (CT: soft tissue; else percentiles)", None),
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
    """Dock widget: image, masks layer, model, device, options, actions and status."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.annotator = Annotator(napari_viewer, on_status=self._show_status)
        self._bound_keys: list[str] = []
        self._closed = False
        self._build_ui()
        self.setToolTip(shortcut_help())
        self._bind_keys()
        # When napari deletes the window, stop the worker and release the viewer's shortcuts.
        self.destroyed.connect(lambda *_: self.close_annotator())
        napari_viewer.layers.events.inserted.connect(self._refresh_layers)
        napari_viewer.layers.events.removed.connect(self._refresh_layers)
        self._model_changed()
        self._refresh_layers()
        # Finding the other models imports torch: done in a worker, the window stays responsive.
        self._discovery = create_worker(available_models, _start_thread=False, _ignore_errors=True)
        self._discovery.returned.connect(self._add_found_models)
        self._discovery.errored.connect(
            lambda error: show_error(f"Box annotator: could not look for other models: {error}")
        )
        self._discovery.start()

    # ------------------------------------------------------------------ UI
    def _build_ui(self) -> None:
        self.image_combo = QComboBox()
        self.labels_combo = QComboBox()
        self.model_combo = QComboBox()
        self.model_combo.addItem(BUNDLED.label, BUNDLED.name_or_path)
        self.model_combo.addItem(CHOOSE_FILE, None)
        self._model_index = 0  # the entry of the model in use (a download entry is not one)
        self.download_row = ModelDownloadRow(self._downloaded, self)
        self.device_combo = QComboBox()
        self.device_combo.addItems(DEVICES)
        self.window_combo = QComboBox()
        for text, window in WINDOW_CHOICES:
            self.window_combo.addItem(text, window)
        self.overwrite_box = QCheckBox("New masks may overwrite other objects")
        self.key_slice_box = QCheckBox("New boxes add key slices to the active object")
        self.positive_button = QRadioButton("+ clicks")
        self.negative_button = QRadioButton("- clicks")
        self.positive_button.setChecked(True)
        self.propagate_button = QPushButton("Propagate through stack (Shift-G)")
        self.stop_button = QPushButton("Stop (Shift-X)")
        self.status_label = QLabel("Starting...")
        self.status_label.setWordWrap(True)
        self.help_label = QLabel(shortcut_help())
        self.help_label.setWordWrap(True)
        self.help_label.setStyleSheet("color: gray; font-size: small;")
        self.series_panel = SeriesPanel(self.viewer, self.annotator, self)
        self.finetune_panel = FinetunePanel(self, extra_pairs=self._series_training_pairs)
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

        form = QFormLayout()
        form.addRow("Image", self.image_combo)
        form.addRow("Masks", self.labels_combo)
        form.addRow("Model", self.model_combo)
        form.addRow("Device", self.device_combo)
        form.addRow("Intensity", self.window_combo)
        clicks = QHBoxLayout()
        clicks.addWidget(self.positive_button)
        clicks.addWidget(self.negative_button)
        buttons = QHBoxLayout()
        buttons.addWidget(self.propagate_button)
        buttons.addWidget(self.stop_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.download_row)
        layout.addWidget(self.overwrite_box)
        layout.addWidget(self.key_slice_box)
        layout.addLayout(clicks)
        layout.addLayout(buttons)
        layout.addWidget(self.series_panel)
        layout.addWidget(self.classes_section)
        layout.addWidget(self.finetune_section)
        layout.addWidget(self.status_label)
        layout.addWidget(self.help_label)
        layout.addStretch(1)

        self.image_combo.activated.connect(lambda *_: self._image_chosen())
        self.labels_combo.activated.connect(lambda *_: self._labels_chosen())
        self.model_combo.activated.connect(lambda *_: self._model_changed())
        self.device_combo.activated.connect(lambda *_: self._model_changed())
        self.window_combo.activated.connect(lambda *_: self._window_chosen())
        self.overwrite_box.toggled.connect(self._set_overwrite)
        self.key_slice_box.toggled.connect(self._set_key_slices)
        self.positive_button.toggled.connect(self.annotator.set_click_sign)
        self.propagate_button.clicked.connect(lambda *_: self.annotator.propagate())
        self.stop_button.clicked.connect(lambda *_: self.annotator.cancel())

    def _show_status(self, text: str) -> None:
        self.status_label.setText(text)

    def _set_overwrite(self, on: bool) -> None:
        self.annotator.overwrite = bool(on)

    def _set_key_slices(self, on: bool) -> None:
        self.annotator.extend_object = bool(on)

    # ------------------------------------------------------------------ layers
    def _refresh_layers(self, event=None) -> None:
        """List the viewer's images and labels; start on the first image when the widget opens or
        an image arrives and nothing is attached (not when layers go away: closing the viewer
        removes them all)."""
        images = self._list_layers()
        session = self.series_panel.session
        if session is not None and session.replacing:
            return  # the series shows another item and attaches it itself
        arrived = event is None or isinstance(getattr(event, "value", None), Image)
        if (
            self.annotator.image is None
            and images
            and arrived
            and getattr(event, "type", "") != "removed"
        ):
            arrived_layer = getattr(event, "value", None)
            chosen = (
                arrived_layer
                if isinstance(arrived_layer, Image)
                else self.image_combo.currentData()
            )
            self._attach(chosen, None)

    def _list_layers(self) -> list:
        """Fill the image and labels choices; returns the image layers."""
        images = [layer for layer in self.viewer.layers if isinstance(layer, Image)]
        current = self.annotator.image
        self.image_combo.blockSignals(True)
        self.image_combo.clear()
        for layer in images:
            self.image_combo.addItem(layer.name, layer)
        if current in images:
            self.image_combo.setCurrentIndex(images.index(current))
        self.image_combo.blockSignals(False)

        labels = [layer for layer in self.viewer.layers if isinstance(layer, Labels)]
        self.labels_combo.blockSignals(True)
        self.labels_combo.clear()
        self.labels_combo.addItem(NEW_LABELS, None)
        for layer in labels:
            self.labels_combo.addItem(layer.name, layer)
        if self.annotator.labels in labels:
            self.labels_combo.setCurrentIndex(labels.index(self.annotator.labels) + 1)
        self.labels_combo.blockSignals(False)
        return images

    def _image_chosen(self) -> None:
        image = self.image_combo.currentData()
        if image is not None and image is not self.annotator.image:
            self._attach(image, None)

    def _labels_chosen(self) -> None:
        labels = self.labels_combo.currentData()
        if self.annotator.image is not None and (
            labels is None or labels is not self.annotator.labels
        ):
            self._attach(self.annotator.image, labels)

    def _attach(self, image: Image, labels: Labels | None) -> None:
        """Annotate ``image`` into ``labels`` (a new layer when None)."""
        try:
            self.annotator.attach(image, labels)
        except ImageLayerError as error:
            self._show_status(str(error))
            show_error(str(error))
        self._list_layers()

    def _series_training_pairs(self) -> list:
        """``(image, labels)`` of the other items of the open series that have saved labels
        with objects (the item on screen is taken from its layers by the fine-tune panel)."""
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
    def _add_found_models(self, choices) -> None:
        """Offer the models found on disk (besides the bundled one), before "Choose file..."."""
        if self._closed:
            return
        known = {self.model_combo.itemData(i) for i in range(self.model_combo.count())}
        for choice in choices:
            if choice.name_or_path not in known and choice not in known:
                # A download entry carries its ModelChoice: its name is not loadable yet.
                data = choice if choice.download else choice.name_or_path
                self.model_combo.insertItem(self.model_combo.count() - 1, choice.label, data)

    def _window_chosen(self) -> None:
        """Give the model the chosen window; "as displayed" takes the image layer's contrast
        limits at the moment of choosing."""
        window = self.window_combo.currentData()
        if window == DISPLAYED:
            image = self.annotator.image
            window = None if image is None else tuple(image.contrast_limits)
        self.annotator.set_window(window)

    def _model_changed(self) -> None:
        name_or_path = self.model_combo.currentData()
        label = self.model_combo.currentText()
        if isinstance(name_or_path, ModelChoice):  # "... (download, ~N MB)": ask, then fetch
            self.model_combo.setCurrentIndex(self._model_index)
            self.download_row.offer(name_or_path)
            return
        if name_or_path is None:
            path, _ = QFileDialog.getOpenFileName(
                self, "Model weights", "", "PyTorch weights (*.pth *.pt)"
            )
            if not path:
                return
            self.model_combo.insertItem(self.model_combo.count() - 1, f"File: {path}", path)
            self.model_combo.setCurrentIndex(self.model_combo.count() - 2)
            name_or_path, label = path, f"File: {path}"
        self._model_index = self.model_combo.currentIndex()
        self.annotator.set_model(name_or_path, self.device_combo.currentText(), label)

    def _downloaded(self, choice: ModelChoice) -> None:
        """The download entry becomes the model's entry, which is selected and loaded."""
        if self._closed:
            return
        for index in range(self.model_combo.count()):
            data = self.model_combo.itemData(index)
            if isinstance(data, ModelChoice) and data.name_or_path == choice.name_or_path:
                self.model_combo.setItemText(index, choice.label)
                self.model_combo.setItemData(index, choice.name_or_path)
                self.model_combo.setCurrentIndex(index)
                break
        else:
            self._add_found_models([choice])
            self.model_combo.setCurrentIndex(self.model_combo.findData(choice.name_or_path))
        self._model_changed()

    def set_disk_cache(self, disk_cache) -> None:
        """Read and store encoded slices in ``disk_cache`` (a DiskEmbeddingCache; None: none)."""
        self.annotator.set_disk_cache(disk_cache)
        self.series_panel.show_cache_folder()

    # ------------------------------------------------------------------ shortcuts
    def _bind_keys(self) -> None:
        actions = {
            "Shift-G": lambda viewer: self.annotator.propagate(),
            "Shift-X": lambda viewer: self.annotator.cancel(),
            "Shift-K": lambda viewer: self.key_slice_box.toggle(),
            "Shift-O": lambda viewer: self.overwrite_box.toggle(),
            "Shift-C": lambda viewer: self._toggle_click_sign(),
        }
        for number, key in enumerate(CLASS_KEYS):
            actions[key] = lambda viewer, n=number: self.class_panel.pick_by_key(n)
        for key, action in actions.items():
            try:
                self.viewer.bind_key(key, action)
            except ValueError:  # already bound in this viewer (e.g. a second annotator)
                continue
            self._bound_keys.append(key)

    def _toggle_click_sign(self) -> None:
        target = self.negative_button if self.positive_button.isChecked() else self.positive_button
        target.setChecked(True)

    def close_annotator(self) -> bool:
        """Stop background work and release the viewer's shortcuts; True when no thread is left.

        Touches no Qt object, so it can run while the widget is being destroyed.
        """
        if self._closed:
            return True
        self._closed = True
        self.series_panel.shut_down()  # saves the series' masks
        finetune_ended = self.finetune_panel.close_panel()
        download_ended = self.download_row.close_row()
        self.object_panel.close_panel()
        for key in self._bound_keys:
            self.viewer.bind_key(key, None)
        self._bound_keys.clear()
        for signal in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            signal.disconnect(self._refresh_layers)
        return self.annotator.close() and finetune_ended and download_ended
