"""The Box annotator's options and actions: how new masks are written, ± clicks, propagation.

Three options (new masks may overwrite other objects; new boxes add key slices to the active
object; propagate with the reference scripts' rules, for comparisons), the sign of the next
click, and the propagate / stop buttons. Each control acts on the :class:`~.annotator.Annotator`
directly; the dock widget binds the keyboard shortcuts named on them.
"""

from __future__ import annotations

from qtpy.QtWidgets import QCheckBox, QHBoxLayout, QPushButton, QRadioButton, QVBoxLayout, QWidget


class AnnotationOptions(QWidget):
    """Checkboxes, click-sign buttons and propagation buttons of one annotator."""

    def __init__(self, annotator, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.annotator = annotator
        self.overwrite_box = QCheckBox("New masks may overwrite other objects")
        self.key_slice_box = QCheckBox("New boxes add key slices to the active object")
        self.reference_box = QCheckBox("Propagate as the LiteMedSAM reference scripts")
        self.reference_box.setToolTip(
            "For comparisons: the reference schedule exactly, instead of ours (which stops "
            "where the decoder doubts its mask and fills gaps from both key slices)"
        )
        self.positive_button = QRadioButton("+ clicks")
        self.negative_button = QRadioButton("- clicks")
        self.positive_button.setChecked(True)
        self.propagate_button = QPushButton("Propagate through stack (Shift-G)")
        self.stop_button = QPushButton("Stop (Shift-X)")

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for box in (self.overwrite_box, self.key_slice_box, self.reference_box):
            layout.addWidget(box)
        clicks = QHBoxLayout()
        clicks.addWidget(self.positive_button)
        clicks.addWidget(self.negative_button)
        buttons = QHBoxLayout()
        buttons.addWidget(self.propagate_button)
        buttons.addWidget(self.stop_button)
        layout.addLayout(clicks)
        layout.addLayout(buttons)

        self.overwrite_box.toggled.connect(self._set_overwrite)
        self.key_slice_box.toggled.connect(self._set_key_slices)
        self.reference_box.toggled.connect(self._set_reference_propagation)
        self.positive_button.toggled.connect(annotator.set_click_sign)
        self.propagate_button.clicked.connect(lambda *_: annotator.propagate())
        self.stop_button.clicked.connect(lambda *_: annotator.cancel())

    def _set_overwrite(self, on: bool) -> None:
        self.annotator.overwrite = bool(on)

    def _set_key_slices(self, on: bool) -> None:
        self.annotator.extend_object = bool(on)

    def _set_reference_propagation(self, on: bool) -> None:
        self.annotator.reference_propagation = bool(on)

    def toggle_click_sign(self) -> None:
        """The next clicks negative if they were positive, and the other way round."""
        target = self.negative_button if self.positive_button.isChecked() else self.positive_button
        target.setChecked(True)
