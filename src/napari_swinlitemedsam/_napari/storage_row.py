"""The widget's storage rows: where new masks live (memory or a zarr store, and its folder) and
how much memory the annotator's caches take.

The switch itself is :class:`.MaskStorage` (rule in ``io.label_stores``); a change applies to
the next new masks layer (choose "(new layer)" in Masks to start one now): masks already
painted stay where they are.
"""

from __future__ import annotations

from pathlib import Path

from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_swinlitemedsam.io.label_stores import DISK_MASKS_VOXELS

STORAGE_CHOICES = (
    (f"auto (on disk for lazy stacks or > {DISK_MASKS_VOXELS >> 20} Mi voxels)", "auto"),
    ("in memory", "memory"),
    ("zarr store on disk", "disk"),
)
MB = 1 << 20


def cache_memory(annotator) -> tuple[int, int, int, int]:
    """``(embedding bytes, embedding budget, read-ahead bytes, read-ahead budget)`` in use by
    ``annotator``'s predictor and prepared stack (zeros when there is none)."""
    cache = getattr(annotator.predictor, "cache", None)
    embedded = (cache.nbytes, cache.max_bytes) if cache is not None else (0, 0)
    read_ahead = getattr(annotator.prepared_image, "read_ahead", None)
    kept = (read_ahead.nbytes, read_ahead.max_bytes) if read_ahead is not None else (0, 0)
    return embedded + kept


def cache_memory_text(annotator) -> str:
    embedded, embed_budget, kept, kept_budget = cache_memory(annotator)
    text = f"Memory: embeddings {embedded / MB:.0f} of {embed_budget / MB:.0f} MB"
    if kept_budget:
        text += f", read-ahead {kept / MB:.0f} of {kept_budget / MB:.0f} MB"
    return text


class StorageRow(QWidget):
    """ "Masks store" choice and "Folder..." button, then a line saying where the masks of the
    annotated image live and a line with the caches' memory (see :meth:`show_state`)."""

    def __init__(self, annotator, parent=None) -> None:
        super().__init__(parent)
        self.annotator = annotator
        self.storage_choice = QComboBox()
        for text, value in STORAGE_CHOICES:
            self.storage_choice.addItem(text, value)
        self.storage_choice.setToolTip(
            "Where a new masks layer lives: in memory, or in a chunked zarr store on disk "
            "(written slice by slice; undo works; reopening the image reopens its masks)"
        )
        self.folder_button = QPushButton("Folder...")
        self.folder_button.setToolTip("Folder of the masks stores (default: beside the image file)")
        self.where_label = QLabel("-")
        self.where_label.setWordWrap(True)
        self.memory_label = QLabel("-")
        self.memory_label.setToolTip(
            "Memory held by the embedding cache and the read-ahead of decoded slices"
        )
        choice_row = QHBoxLayout()
        choice_row.setContentsMargins(0, 0, 0, 0)
        choice_row.addWidget(QLabel("Masks store:"))
        choice_row.addWidget(self.storage_choice, 1)
        choice_row.addWidget(self.folder_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(choice_row)
        layout.addWidget(self.where_label)
        layout.addWidget(self.memory_label)
        self.storage_choice.currentIndexChanged.connect(self._storage_chosen)
        self.folder_button.clicked.connect(self._choose_folder)

    def set_storage(self, storage: str) -> None:
        self.storage_choice.setCurrentIndex(self.storage_choice.findData(storage))

    def set_folder(self, folder: str | Path | None) -> None:
        self.annotator.mask_storage.folder = None if folder is None else Path(folder)
        self.show_state()

    def _storage_chosen(self, index: int = 0) -> None:
        self.annotator.mask_storage.storage = self.storage_choice.currentData()
        self.show_state()

    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder for the masks stores")
        if folder:
            self.set_folder(folder)

    def show_state(self) -> None:
        """Say where the current masks live and what the caches take now."""
        store = self.annotator.masks_store
        if store is not None:
            where = f"Masks: {store}"
        elif self.annotator.labels is not None:
            where = "Masks: in memory"
        else:
            where = "Masks: -"
        folder = self.annotator.mask_storage.folder
        if folder is not None:
            where += f" (new stores in {folder})"
        self.where_label.setText(where)
        self.memory_label.setText(cache_memory_text(self.annotator))
