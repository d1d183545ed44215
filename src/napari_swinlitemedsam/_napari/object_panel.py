"""The object table of the "Classes" section and its actions, for the annotator's masks layer.

One row per object of the masks layer (id, class, slices, voxels, physical volume from the
layer's scale and units, model/painted/both), computed by ``annotation.object_table``. Clicking
a row shows the object's middle slice and selects its box there. Delete, merge, split and
change class work on the selected rows; pixel changes are ``annotation.object_edits`` edits
applied with ``Labels.data_setitem``, so Ctrl+Z on the masks layer undoes them, and they never
touch other objects' pixels.

New boxes get the active class of the class list the first time their id is seen. The table is
recomputed in a worker thread shortly after the masks change, only while the panel is visible,
and at once (on the GUI thread) after the panel's own actions.
"""

from __future__ import annotations

import numpy as np
from napari.qt.threading import create_worker
from napari.utils.notifications import show_info
from qtpy.QtCore import QItemSelectionModel, QTimer
from qtpy.QtGui import QColor
from qtpy.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_swinlitemedsam._napari import layer_io
from napari_swinlitemedsam._napari.class_list_panel import ClassListPanel
from napari_swinlitemedsam.annotation.class_list import ClassList
from napari_swinlitemedsam.annotation.object_classes import ObjectClasses, Provenance
from napari_swinlitemedsam.annotation.object_edits import (
    LabelEdit,
    ObjectEditError,
    delete_object,
    merge_objects,
    split_component,
)
from napari_swinlitemedsam.annotation.object_table import ObjectRow, ids_present, object_table

COLUMNS = ("id", "class", "slices", "voxels", "volume", "source")
REFRESH_DELAY_MS = 200
PAINTING = ("paint", "fill", "polygon")


def layer_spacing(
    labels, unit_hint: str | None = None
) -> tuple[tuple[float, ...] | None, str | None]:
    """The masks layer's voxel size (its ``scale``) and length unit (the layer's own, else
    ``unit_hint``, e.g. the unit of the image file); ``(None, None)`` for an unscaled layer."""
    scale = tuple(float(s) for s in labels.scale)
    units = getattr(labels, "units", None)
    unit = str(units[-1]) if units is not None and len(units) else None
    unit = unit_hint if unit in (None, "pixel") else unit
    if unit is None and all(s == 1.0 for s in scale):
        return None, None
    return scale, unit


class ObjectPanel(QWidget):
    """Object table and actions for ``annotator``'s masks; classes from ``class_panel``."""

    def __init__(self, viewer, annotator, class_panel: ClassListPanel, parent=None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.annotator = annotator
        self.class_panel = class_panel
        self.objects = ObjectClasses()
        self.unit_hint: str | None = None  # the image file's length unit, when it names one
        self.rows: list[ObjectRow] = []
        self._seen: set[int] = set()
        self._labels = None
        self._boxes = None
        self._dirty = True
        self._editing = False
        self._closed = False
        self._generation = 0  # rows computed for an older state are not shown
        self._worker = None
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.table.setMinimumHeight(140)
        self.delete_button = QPushButton("Delete")
        self.merge_button = QPushButton("Merge 2")
        self.split_button = QPushButton("Split piece")
        self.class_button = QPushButton("Set class")
        self.class_button.setToolTip("Give the selected objects the active class")
        actions = QHBoxLayout()
        for button in (self.delete_button, self.merge_button, self.split_button, self.class_button):
            actions.addWidget(button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.table)
        layout.addLayout(actions)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(REFRESH_DELAY_MS)
        self._timer.timeout.connect(self.refresh_in_background)
        self.table.cellClicked.connect(lambda row, column: self.go_to_row(row))
        self.delete_button.clicked.connect(lambda *_: self.delete_selected())
        self.merge_button.clicked.connect(lambda *_: self.merge_selected())
        self.split_button.clicked.connect(lambda *_: self.split_selected())
        self.class_button.clicked.connect(lambda *_: self.set_class_of_selected())
        class_panel.changed.connect(self.schedule_refresh)
        class_panel.removed.connect(self._class_removed)
        viewer.layers.events.inserted.connect(self._layers_changed)
        self.follow_annotator()

    # ------------------------------------------------------------------ following the layers
    def _layers_changed(self, event=None) -> None:
        # The annotator assigns its new layers after adding them: look once it is done.
        QTimer.singleShot(0, self.follow_annotator)

    def follow_annotator(self) -> None:
        """Listen to the annotator's current masks and box layers (after attach)."""
        labels, boxes = self.annotator.labels, self.annotator.boxes
        if labels is not self._labels:
            if self._labels is not None:
                self._labels.events.labels_update.disconnect(self.schedule_refresh)
                self._labels.events.paint.disconnect(self._painted)
            self._labels = labels
            if labels is not None:
                labels.events.labels_update.connect(self.schedule_refresh)
                labels.events.paint.connect(self._painted)
            self.schedule_refresh()
        if boxes is not self._boxes:
            if self._boxes is not None:
                self._boxes.events.features.disconnect(self._boxes_changed)
            self._boxes = boxes
            if boxes is not None:
                boxes.events.features.connect(self._boxes_changed)

    def set_objects(self, objects: ObjectClasses) -> None:
        """Use ``objects`` (e.g. restored from a saved table) for the masks now shown."""
        self.objects = objects
        self._seen = set(objects.classes) | set(objects.provenance)
        if self._labels is not None:
            self._seen |= ids_present(self._labels.data)
        self.schedule_refresh()

    def _boxes_changed(self, event=None) -> None:
        """Ids written to the box layer: new ones get the active class and come from the model."""
        if self._boxes is None:
            return
        new = [
            int(i) for i in layer_io.object_ids(self._boxes) if i > 0 and int(i) not in self._seen
        ]
        for object_id in new:
            self.objects.assign_new(object_id, self.class_panel.active_class)
        self.objects.note(new, Provenance.MODEL)
        self._seen.update(new)
        if new:
            self.schedule_refresh()

    def _painted(self, event=None) -> None:
        """A change entered the masks' undo history. napari emits this for the model's writes
        too, so it counts as painting only while the user can paint: the masks layer active in
        a painting mode, and not one of this panel's own edits."""
        labels = self._labels
        if labels is None or self._editing or labels.selected_label <= 0:
            return
        if self.viewer.layers.selection.active is not labels or str(labels.mode) not in PAINTING:
            return
        self.objects.note([labels.selected_label], Provenance.PAINTED)
        self._seen.add(int(labels.selected_label))

    def _class_removed(self, class_id: int) -> None:
        self.objects.unclassify(class_id)
        self.schedule_refresh()

    # ------------------------------------------------------------------ the table
    def schedule_refresh(self, event=None) -> None:
        self._dirty = True
        if self.isVisible() and not self._closed:
            self._timer.start()

    def showEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().showEvent(event)
        if self._dirty:
            self._timer.start()

    def _table_job(self) -> tuple:
        """``object_table``'s arguments for the masks now shown (bookkeeping copied, so a
        background run sees one consistent state)."""
        spacing, unit = layer_spacing(self._labels, self.unit_hint)
        class_list = ClassList(self.class_panel.class_list)
        # Masks on disk stay a store: object_table reads it one slice at a time.
        return self._labels.data, self.objects.copy(), class_list, spacing, unit

    def refresh(self) -> None:
        """Recompute the rows from the masks layer now, on this thread (after an action)."""
        self._generation += 1
        self._dirty = False
        self._show_rows(
            self._generation, [] if self._labels is None else object_table(*self._table_job())
        )

    def refresh_in_background(self) -> None:
        """Recompute the rows in a worker thread (after the masks changed): a large stack takes
        a second or more. One run at a time; a change during a run starts another after it."""
        if self._worker is not None:
            self._dirty = True
            return
        if self._labels is None:
            return self.refresh()
        self._generation += 1
        self._dirty = False
        generation = self._generation
        worker = create_worker(object_table, *self._table_job(), _start_thread=False)
        worker.returned.connect(lambda rows: self._show_rows(generation, rows))
        worker.errored.connect(lambda error: show_info(f"Object table not updated: {error}"))
        worker.finished.connect(self._worker_finished)
        self._worker = worker
        worker.start()

    def _worker_finished(self) -> None:
        self._worker = None
        if self._dirty and not self._closed:
            self.schedule_refresh()

    def _show_rows(self, generation: int, rows: list[ObjectRow]) -> None:
        """Fill the table (the selected objects stay selected); results of older runs are
        dropped."""
        if generation != self._generation or self._closed:
            return
        selected = self.selected_ids()
        self.rows = rows
        self.table.setRowCount(len(self.rows))
        for index, row in enumerate(self.rows):
            slices = "" if row.first_slice is None else f"{row.first_slice}-{row.last_slice}"
            texts = (
                str(row.object_id),
                row.class_name,
                slices,
                str(row.voxel_count),
                f"{row.volume:.4g} {row.unit}",
                row.provenance,
            )
            for column, text in enumerate(texts):
                self.table.setItem(index, column, QTableWidgetItem(text))
            if row.class_name:
                colour = self.class_panel.class_list.get(row.class_id).colour
                self.table.item(index, 1).setBackground(QColor(colour))
        self.select_ids(selected)

    def selected_ids(self) -> list[int]:
        """Ids of the selected rows, in the order they were selected."""
        rows = [index.row() for index in self.table.selectionModel().selectedRows()]
        return [self.rows[r].object_id for r in rows if r < len(self.rows)]

    def select_ids(self, object_ids: list[int]) -> None:
        """Select the rows of ``object_ids`` (added to one selection, as Ctrl+click does)."""
        self.table.clearSelection()
        model, flags = (
            self.table.selectionModel(),
            QItemSelectionModel.Select | QItemSelectionModel.Rows,
        )
        for index, row in enumerate(self.rows):
            if row.object_id in object_ids:
                model.select(self.table.model().index(index, 0), flags)

    def go_to_row(self, index: int) -> None:
        """Show the object's middle slice and select its box there (and its label for painting)."""
        if not 0 <= index < len(self.rows) or self._labels is None:
            return
        row = self.rows[index]
        if row.middle_slice is not None:
            world = self._labels.data_to_world([row.middle_slice, 0, 0])
            axis = self.viewer.dims.ndim - self._labels.ndim
            self.viewer.dims.set_point(axis, float(world[0]))
        self._labels.selected_label = row.object_id
        if self._boxes is not None:
            shape = tuple(self._labels.data.shape)
            boxes = layer_io.read_boxes(self._boxes, shape)
            on_slice = {
                i
                for i, box in enumerate(boxes)
                if box.object_id == row.object_id and box.slice_index == row.middle_slice
            }
            self._boxes.selected_data = on_slice

    # ------------------------------------------------------------------ actions
    def _apply(self, edit: LabelEdit) -> None:
        self._editing = True
        try:
            self._labels.data_setitem(edit.indices, edit.values)
        finally:
            self._editing = False

    def _remove_boxes(self, object_id: int) -> None:
        """Drop the object's boxes, so that moving one cannot bring its mask back."""
        if self._boxes is None:
            return
        ids = layer_io.object_ids(self._boxes)
        indices = {i for i, oid in enumerate(ids) if oid == object_id}
        if indices:
            self._boxes.selected_data = indices
            self._boxes.remove_selected()

    def _run(self, action) -> bool:
        if self._labels is None:
            show_info("Attach an image first: the table shows its masks layer.")
            return False
        try:
            action()
        except ObjectEditError as error:
            show_info(str(error))
            return False
        self.refresh()
        return True

    def delete_selected(self) -> bool:
        def delete() -> None:
            for object_id in self.selected_ids():
                self._apply(delete_object(self._labels.data, object_id))
                self._remove_boxes(object_id)

        return self._run(delete)

    def merge_selected(self) -> bool:
        """Merge the two selected objects; the larger keeps its id (and its class)."""

        def merge() -> None:
            ids = self.selected_ids()
            if len(ids) != 2:
                raise ObjectEditError("select exactly two objects to merge")
            sizes = {r.object_id: r.voxel_count for r in self.rows}
            keep, absorbed = sorted(ids, key=lambda oid: (-sizes[oid], oid))
            self._apply(merge_objects(self._labels.data, keep, absorbed))
            self.objects.merge(keep, absorbed)
            self._remove_boxes(absorbed)
            self.select_ids([keep])

        return self._run(merge)

    def split_selected(self) -> bool:
        """Split the selected object's second-largest piece off as a new object."""

        def split() -> None:
            ids = self.selected_ids()
            if len(ids) != 1:
                raise ObjectEditError("select one object to split")
            data = self._labels.data
            new_id = self.annotator.state.next_object_id(int(np.max(data, initial=0)))
            self._apply(split_component(data, ids[0], new_id))
            self.objects.split(ids[0], new_id)
            self._seen.add(new_id)

        return self._run(split)

    def set_class_of_selected(self, class_id: int | None = None) -> bool:
        """Give the selected objects ``class_id`` (default: the active class; 0 unclassifies)."""
        chosen = self.class_panel.active_class if class_id is None else class_id

        def assign() -> None:
            for object_id in self.selected_ids():
                self.objects.assign(object_id, chosen)

        return self._run(assign)

    def close_panel(self) -> None:
        """Stop listening; a table run in flight finishes on its own (it only reads)."""
        self._closed = True
        self.viewer.layers.events.inserted.disconnect(self._layers_changed)
        self._timer.stop()
