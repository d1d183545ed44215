"""A titled section of a dock widget that folds away behind its header button."""

from __future__ import annotations

from qtpy.QtWidgets import QPushButton, QVBoxLayout, QWidget


class FoldableSection(QWidget):
    """``body`` under a header button ("▸ title" folded, "▾ title" open); starts folded."""

    def __init__(self, title: str, body: QWidget, parent=None) -> None:
        super().__init__(parent)
        self.title = title
        self.body = body
        self.header = QPushButton()
        self.header.setCheckable(True)
        self.header.setStyleSheet("text-align: left;")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.header)
        layout.addWidget(body)
        self.header.toggled.connect(self.set_expanded)
        self.set_expanded(False)

    def set_expanded(self, expanded: bool) -> None:
        self.header.setText(f"{'▾' if expanded else '▸'} {self.title}")
        if self.header.isChecked() != expanded:
            self.header.setChecked(expanded)
        self.body.setVisible(expanded)
