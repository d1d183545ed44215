"""The "Image series" section of the Box annotator widget: label a folder of images in a row.

Choose the images (a folder, files or a glob pattern), an output folder and a label format, then
open the series: the list shows every item with its state (✓ done, ✎ in progress, · untouched);
Previous / Next (or a double-click) move between items, saving the current masks first. Masks are
saved automatically every few minutes (only when they changed) and when the widget or the
viewer closes. Reopening the same images with the same output folder resumes on the item the user
left, with the saved labels loaded. The bookkeeping is :class:`ImageSeries`; moving and saving is
:class:`SeriesSession`.
"""

from __future__ import annotations

import contextlib

from napari.utils.notifications import show_error
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_swinlitemedsam._napari.foldable_section import FoldableSection
from napari_swinlitemedsam._napari.series_session import SeriesMoveError, SeriesSession
from napari_swinlitemedsam.annotation.series import ImageSeries, ItemState
from napari_swinlitemedsam.io.image_files import IMAGE_SUFFIXES

AUTOSAVE_MS = 120_000
LABEL_FORMAT_CHOICES = (
    ("as the images (NIfTI / NRRD / MHA / TIFF)", "auto"),
    ("TIFF (.tif)", "tiff"),
    ("NIfTI (.nii.gz)", "nifti"),
    ("challenge .npz", "npz"),
)
STATE_MARKS = {ItemState.DONE: "✓", ItemState.IN_PROGRESS: "✎", ItemState.UNTOUCHED: "·"}


class SeriesPanel(QWidget):
    """Series controls bound to ``annotator`` in ``viewer``; a header button folds them away."""

    def __init__(self, viewer, annotator, parent=None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.annotator = annotator
        self.session: SeriesSession | None = None
        self.series_classes = None  # set by the widget: classes saved with each item
        self._build_ui()
        self.autosave_timer = QTimer(self)
        self.autosave_timer.setInterval(AUTOSAVE_MS)
        self.autosave_timer.timeout.connect(self.autosave)

    # ------------------------------------------------------------------ UI
    def _build_ui(self) -> None:
        self.body = QWidget()
        self.sources_edit = QLineEdit()
        self.sources_edit.setPlaceholderText("folder, files (;-separated) or pattern")
        self.folder_button = QPushButton("Folder...")
        self.files_button = QPushButton("Files...")
        self.outdir_edit = QLineEdit()
        self.outdir_edit.setPlaceholderText("where the labels are saved")
        self.outdir_button = QPushButton("...")
        self.format_combo = QComboBox()
        for text, name in LABEL_FORMAT_CHOICES:
            self.format_combo.addItem(text, name)
        self.open_button = QPushButton("Open series")
        self.cache_edit = QLineEdit()
        self.cache_edit.setPlaceholderText("optional: folder of encoded slices")
        self.cache_button = QPushButton("...")
        self.item_list = QListWidget()
        self.item_list.setMaximumHeight(120)
        self.previous_button = QPushButton("◀ Previous")
        self.next_button = QPushButton("Next ▶")
        self.skip_done_box = QCheckBox("Skip done items")
        self.done_box = QCheckBox("Done")
        self.save_button = QPushButton("Save now")
        self.summary_label = QLabel("No series open")
        self.summary_label.setWordWrap(True)

        sources = QHBoxLayout()
        sources.addWidget(self.sources_edit, 1)
        sources.addWidget(self.folder_button)
        sources.addWidget(self.files_button)
        outdir = QHBoxLayout()
        outdir.addWidget(self.outdir_edit, 1)
        outdir.addWidget(self.outdir_button)
        form = QFormLayout()
        form.addRow("Images", sources)
        form.addRow("Output", outdir)
        form.addRow("Format", self.format_combo)
        cache = QHBoxLayout()
        cache.addWidget(self.cache_edit, 1)
        cache.addWidget(self.cache_button)
        form.addRow("Cache", cache)
        moves = QHBoxLayout()
        moves.addWidget(self.previous_button)
        moves.addWidget(self.next_button)
        options = QHBoxLayout()
        options.addWidget(self.skip_done_box)
        options.addWidget(self.done_box)
        options.addWidget(self.save_button)
        body = QVBoxLayout(self.body)
        body.setContentsMargins(0, 0, 0, 0)
        body.addLayout(form)
        body.addWidget(self.open_button)
        body.addWidget(self.item_list)
        body.addLayout(moves)
        body.addLayout(options)
        body.addWidget(self.summary_label)
        self.section = FoldableSection("Image series (label a folder)", self.body)
        self.header = self.section.header
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.section)

        self.folder_button.clicked.connect(lambda *_: self._choose_folder())
        self.files_button.clicked.connect(lambda *_: self._choose_files())
        self.outdir_button.clicked.connect(lambda *_: self._choose_outdir())
        self.format_combo.activated.connect(lambda *_: self._format_chosen())
        self.cache_button.clicked.connect(lambda *_: self._choose_cache())
        self.cache_edit.editingFinished.connect(
            lambda: self.set_cache_folder(self.cache_edit.text().strip())
        )
        self.open_button.clicked.connect(lambda *_: self._open_clicked())
        self.item_list.itemDoubleClicked.connect(lambda item: self.go_to(self.item_list.row(item)))
        self.previous_button.clicked.connect(lambda *_: self.step(-1))
        self.next_button.clicked.connect(lambda *_: self.step(1))
        self.skip_done_box.toggled.connect(self._skip_done_toggled)
        self.done_box.clicked.connect(lambda checked: self._done_clicked(bool(checked)))
        self.save_button.clicked.connect(lambda *_: self.save_now())
        self._refresh()

    def set_expanded(self, expanded: bool) -> None:
        """Show or fold away the series controls."""
        self.section.set_expanded(expanded)

    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder of images")
        if folder:
            self.sources_edit.setText(folder)

    def _choose_files(self) -> None:
        patterns = " ".join(f"*{suffix}" for suffix in IMAGE_SUFFIXES)
        files, _ = QFileDialog.getOpenFileNames(self, "Images", "", f"Images ({patterns})")
        if files:
            self.sources_edit.setText(";".join(files))

    def _choose_outdir(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Output folder for the labels")
        if folder:
            self.outdir_edit.setText(folder)

    def _choose_cache(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Embedding cache folder")
        if folder:
            self.set_cache_folder(folder)

    def set_cache_folder(self, folder: str) -> bool:
        """Use an embedding cache on disk in ``folder`` ("" for none); False when it cannot be
        used (the user is told)."""
        current = self.annotator.disk_cache
        if (not folder and current is None) or (
            current is not None and str(current.folder) == folder
        ):
            return True
        cache = None
        if folder:
            from napari_swinlitemedsam.inference.disk_cache import (
                DiskCacheError,
                DiskEmbeddingCache,
            )

            try:
                cache = DiskEmbeddingCache(folder)
            except DiskCacheError as error:
                show_error(f"Embedding cache: {error}")
                return False
        self.annotator.set_disk_cache(cache)
        self.show_cache_folder()
        return True

    def show_cache_folder(self) -> None:
        cache = self.annotator.disk_cache
        self.cache_edit.setText("" if cache is None else str(cache.folder))

    def _open_clicked(self) -> None:
        sources = [part.strip() for part in self.sources_edit.text().split(";") if part.strip()]
        outdir = self.outdir_edit.text().strip()
        if not sources or not outdir:
            show_error(
                "Choose the images (a folder, files or a pattern) and an output folder first."
            )
            return
        self.open_series(
            sources, outdir, self.format_combo.currentData(), self.skip_done_box.isChecked()
        )

    # ------------------------------------------------------------------ series
    def open_series(
        self, sources, outdir, label_format: str = "auto", skip_done: bool = False
    ) -> bool:
        """List ``sources`` (folders, files, patterns) into a series saved in ``outdir`` and show
        its current item; False (after telling the user) when that is not possible."""
        self.sources_edit.setText(";".join(str(source) for source in sources))
        try:
            series = ImageSeries.open(sources, outdir, label_format)
        except (ValueError, OSError) as error:
            show_error(f"Cannot open the series: {error}")
            return False
        return self.set_series(series, skip_done)

    def set_series(self, series: ImageSeries, skip_done: bool = False) -> bool:
        """Label ``series`` from the item the user left last time; False when the current
        series could not be saved first or the item cannot be read."""
        if self.session is not None and not self.close_series():
            return False
        self.set_expanded(True)
        if not self.sources_edit.text().strip():
            self.sources_edit.setText(";".join(str(item) for item in series.items))
        self.outdir_edit.setText(str(series.outdir))
        self.format_combo.setCurrentIndex(self.format_combo.findData(series.label_format))
        self.skip_done_box.blockSignals(True)
        self.skip_done_box.setChecked(skip_done)
        self.skip_done_box.blockSignals(False)
        self.session = SeriesSession(self.viewer, self.annotator, series, skip_done, self._refresh)
        self.annotator.add_background(self.session.background_job)
        if self.series_classes is not None:
            self.series_classes.series_opened(series)
            self.session.classes = self.series_classes
        try:
            self.session.start()
        except SeriesMoveError:
            self._end_session()
            self._refresh()
            return False
        self.autosave_timer.start()
        self._refresh()
        return True

    def go_to(self, index: int) -> bool:
        """Save the current masks and show item ``index``; False when that did not happen."""
        if self.session is None:
            return False
        try:
            self.session.go_to(index)
        except SeriesMoveError:
            self._refresh()
            return False
        return True

    def step(self, direction: int) -> bool:
        """Next (+1) or Previous (-1) item; False at the ends or when saving failed."""
        if self.session is None:
            return False
        try:
            moved = self.session.step(direction)
        except SeriesMoveError:
            moved = False
        self._refresh()
        return moved

    def save_now(self) -> bool:
        """Save the current masks (a file is written only when they changed)."""
        return True if self.session is None else self.session.save()

    def autosave(self) -> None:
        """Timer tick: save when the masks changed (ImageSeries.save skips unchanged masks)."""
        if self.session is not None:
            self.session.save()

    def set_autosave_interval(self, milliseconds: int) -> None:
        self.autosave_timer.setInterval(int(milliseconds))

    def _skip_done_toggled(self, on: bool) -> None:
        if self.session is not None:
            self.session.skip_done = bool(on)

    def _done_clicked(self, done: bool) -> None:
        if self.session is not None:
            self.session.set_done(done)
        self._refresh()

    def _format_chosen(self) -> None:
        if self.session is not None:
            self.session.series.label_format = self.format_combo.currentData()

    def _refresh(self) -> None:
        """Show the items with their states, the current one selected."""
        session = self.session
        has_series = session is not None and session.current is not None
        for control in (self.previous_button, self.next_button, self.done_box, self.save_button):
            control.setEnabled(has_series)
        self.item_list.clear()
        if session is None:
            self.summary_label.setText("No series open")
            return
        series = session.series
        for index, (name, state) in enumerate(zip(series.names, series.states())):
            item = QListWidgetItem(f"{STATE_MARKS[state]} {index + 1}. {name}")
            item.setToolTip(f"{series.items[index]} ({state.value})")
            if index == session.current:
                font = item.font()
                font.setBold(True)
                item.setFont(font)
            self.item_list.addItem(item)
        if session.current is None:
            return
        self.item_list.setCurrentRow(session.current)
        self.item_list.scrollToItem(self.item_list.item(session.current))
        self.done_box.setChecked(series.state(session.current) == ItemState.DONE)
        counts = series.counts()
        self.summary_label.setText(
            f"Item {session.current + 1} of {len(series)}; {counts[ItemState.DONE]} done. "
            f"Labels go to {series.outdir}"
        )

    # ------------------------------------------------------------------ closing
    def close_series(self) -> bool:
        """Save and close the series (its layers stay); False when the masks could not be saved
        (the series then stays open)."""
        if self.session is None:
            return True
        if not self.session.save():
            return False
        self._end_session()
        if self.series_classes is not None:
            self.series_classes.series_closed()
        self.autosave_timer.stop()
        self._refresh()
        return True

    def shut_down(self) -> bool:
        """For a closing widget: save what can be saved and stop the timer (no other widget is
        touched; the panel may be half destroyed)."""
        with contextlib.suppress(RuntimeError):  # the timer's C++ object may be gone already
            self.autosave_timer.stop()
        if self.session is None:
            return True
        return self._end_session()

    def _end_session(self) -> bool:
        """Close the session (saving its masks) and stop offering its prefetch jobs."""
        session, self.session = self.session, None
        self.annotator.remove_background(session.background_job)
        return session.close()
