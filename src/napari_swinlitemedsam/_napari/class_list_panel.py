"""The class list of the "Classes" section: add, rename, recolour, remove, import, export.

The list itself is an ``annotation.class_list.ClassList``; this panel only shows it and turns
clicks into its calls, reporting refused changes (duplicate names, bad files) in the status
line. The selected row is the *active class* new boxes get; Alt-1..Alt-9 pick the first nine
classes and Alt-0 none (napari binds no Alt+digit by default).
"""

from __future__ import annotations

from collections.abc import Callable

from qtpy.QtCore import Qt, Signal
from qtpy.QtGui import QColor, QIcon, QPixmap
from qtpy.QtWidgets import (
    QColorDialog,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_swinlitemedsam.annotation.class_list import ClassList, ClassListError

CLASS_KEYS = tuple(f"Alt-{n}" for n in range(10))
"""Alt-0: no active class; Alt-n: the n-th class of the list."""


def colour_icon(colour: str) -> QIcon:
    pixmap = QPixmap(12, 12)
    pixmap.fill(QColor(colour))
    return QIcon(pixmap)


class ClassListPanel(QWidget):
    """Shows and edits one :class:`ClassList`; emits ``changed`` after every change and
    ``removed(class_id)`` when a class goes."""

    changed = Signal()
    removed = Signal(int)

    def __init__(self, class_list: ClassList | None = None, parent=None) -> None:
        super().__init__(parent)
        self.class_list = class_list if class_list is not None else ClassList()
        self.list_view = QListWidget()
        self.list_view.setMaximumHeight(110)
        self.name_edit = QLineEdit()
        self.name_edit.setPlaceholderText("class name, e.g. tumour")
        self.add_button = QPushButton("Add")
        self.rename_button = QPushButton("Rename")
        self.colour_button = QPushButton("Colour...")
        self.remove_button = QPushButton("Remove")
        self.import_button = QPushButton("Import...")
        self.export_button = QPushButton("Export...")
        self.message = QLabel("")
        self.message.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.list_view)
        name_row = QHBoxLayout()
        name_row.addWidget(self.name_edit)
        name_row.addWidget(self.add_button)
        name_row.addWidget(self.rename_button)
        layout.addLayout(name_row)
        edit_row = QHBoxLayout()
        for button in (
            self.colour_button,
            self.remove_button,
            self.import_button,
            self.export_button,
        ):
            edit_row.addWidget(button)
        layout.addLayout(edit_row)
        layout.addWidget(self.message)
        self.add_button.clicked.connect(lambda *_: self._guarded(self._add_typed))
        self.name_edit.returnPressed.connect(lambda: self._guarded(self._add_typed))
        self.rename_button.clicked.connect(lambda *_: self._guarded(self._rename_typed))
        self.colour_button.clicked.connect(lambda *_: self._choose_colour())
        self.remove_button.clicked.connect(lambda *_: self._guarded(self._remove_active))
        self.import_button.clicked.connect(lambda *_: self._choose_import())
        self.export_button.clicked.connect(lambda *_: self._choose_export())
        self.refresh()

    # ------------------------------------------------------------------ reading
    @property
    def active_class(self) -> int:
        """The selected class's id; 0 when none is selected."""
        item = self.list_view.currentItem()
        return int(item.data(Qt.UserRole)) if item is not None and item.isSelected() else 0

    def set_active(self, class_id: int) -> None:
        """Select ``class_id`` (0: none)."""
        self.list_view.clearSelection()
        self.list_view.setCurrentItem(None)
        for row in range(self.list_view.count()):
            item = self.list_view.item(row)
            if int(item.data(Qt.UserRole)) == class_id:
                self.list_view.setCurrentItem(item)
                item.setSelected(True)

    def pick_by_key(self, number: int) -> None:
        """Alt-``number``: the ``number``-th class (1-based), 0 for none."""
        ids = self.class_list.ids()
        self.set_active(ids[number - 1] if 0 < number <= len(ids) else 0)

    def refresh(self) -> None:
        active = self.active_class
        self.list_view.clear()
        for item in self.class_list:
            row = QListWidgetItem(colour_icon(item.colour), f"{item.class_id}  {item.name}")
            row.setData(Qt.UserRole, item.class_id)
            self.list_view.addItem(row)
        self.set_active(active)

    # ------------------------------------------------------------------ changes
    def add_class(self, name: str, colour: str | None = None) -> int:
        """Add a class, make it active; returns its id (ClassListError when refused)."""
        item = self.class_list.add(name, colour)
        self._changed()
        self.set_active(item.class_id)
        return item.class_id

    def rename_class(self, class_id: int, name: str) -> None:
        self.class_list.rename(class_id, name)
        self._changed()

    def recolour_class(self, class_id: int, colour: str) -> None:
        self.class_list.recolour(class_id, colour)
        self._changed()

    def remove_class(self, class_id: int) -> None:
        self.class_list.remove(class_id)
        self._changed()
        self.removed.emit(class_id)

    def replace_list(self, class_list: ClassList) -> None:
        """Show another list (an imported file, the series' list)."""
        gone = set(self.class_list.ids()) - set(class_list.ids())
        self.class_list = class_list
        self._changed()
        for class_id in sorted(gone):
            self.removed.emit(class_id)

    def import_file(self, path: str) -> None:
        self.replace_list(ClassList.load(path))
        self.message.setText(f"{len(self.class_list)} classes from {path}")

    def export_file(self, path: str) -> None:
        self.class_list.save(path)
        self.message.setText(f"class list written to {path}")

    def _changed(self) -> None:
        self.message.setText("")
        self.refresh()
        self.changed.emit()

    def _guarded(self, action: Callable[[], None]) -> None:
        """Run ``action``; a refused change is explained in the panel, the list stays as it was."""
        try:
            action()
        except (ClassListError, OSError) as error:
            self.message.setText(str(error))

    def _add_typed(self) -> None:
        name = self.name_edit.text().strip() or f"class {max(self.class_list.ids(), default=0) + 1}"
        self.add_class(name)
        self.name_edit.clear()

    def _rename_typed(self) -> None:
        if self.active_class:
            self.rename_class(self.active_class, self.name_edit.text())
            self.name_edit.clear()

    def _remove_active(self) -> None:
        if self.active_class:
            self.remove_class(self.active_class)

    def _choose_colour(self) -> None:
        if not self.active_class:
            return
        current = QColor(self.class_list.get(self.active_class).colour)
        chosen = QColorDialog.getColor(current, self, "Class colour")
        if chosen.isValid():
            self._guarded(lambda: self.recolour_class(self.active_class, chosen.name()))

    def _choose_import(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Class list", "", "Class lists (*.json)")
        if path:
            self._guarded(lambda: self.import_file(path))

    def _choose_export(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Class list", "classes.json", "JSON (*.json)")
        if path:
            self._guarded(lambda: self.export_file(path))
