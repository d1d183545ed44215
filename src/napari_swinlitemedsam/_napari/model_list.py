"""The widget's model list: its entries, the download offer, and handing the choice to the
annotator.

The list starts with the bundled model, gets the models found on disk (in a worker, see
``annotation.model_choices.available_models``) and model files chosen or saved meanwhile, and
ends with "Choose file...". Choosing an entry loads that model; a "(download, ~N MB)" entry
asks through the :class:`.ModelDownloadRow` first.
"""

from __future__ import annotations

from pathlib import Path

from magicgui.widgets import ComboBox
from napari.utils.notifications import show_error
from qtpy.QtWidgets import QFileDialog

from napari_swinlitemedsam.annotation.model_choices import (
    BUNDLED,
    CHOOSE_FILE,
    ModelChoice,
    own_weights_choice,
)


class ModelList:
    """The entries of ``combo`` (a magicgui ComboBox) and what choosing one does.

    ``annotator``: the :class:`.Annotator` that loads the chosen model; ``download_row``: the
    row that offers downloads; ``device`` / ``precision``: the widget's ComboBoxes read when a
    model is loaded; ``parent``: the Qt widget file dialogs open over.
    """

    def __init__(self, combo: ComboBox, annotator, download_row, device, precision, parent):
        self.combo = combo
        self.annotator = annotator
        self.download_row = download_row
        self.device, self.precision, self.parent = device, precision, parent
        self.choices: list[ModelChoice] = [BUNDLED]
        self.refreshing = False  # re-listing or showing the model in use loads nothing
        self.closed = False

    def entries(self, widget=None) -> list[tuple[str, str]]:
        # "Choose file..." last, with its own text as value (no model is called that); a None
        # value would make magicgui move the entry to the top as its "no choice" item.
        return [(c.label, c.name_or_path) for c in self.choices] + [(CHOOSE_FILE, CHOOSE_FILE)]

    def offer(self, choice: ModelChoice) -> None:
        """List ``choice`` (before "Choose file...") unless a model of that file is listed."""
        if any(known.name_or_path == choice.name_or_path for known in self.choices):
            return
        self.choices.append(choice)
        current = self.combo.value
        self.refreshing = True
        try:
            # magicgui appends new entries: drop "Choose file..." and list it again, last.
            self.combo.choices = self.entries()[:-1]
            self.combo.choices = self.entries
            self.combo.value = current
        finally:
            self.refreshing = False

    def add_found(self, choices) -> None:
        """Offer the models found on disk (besides the bundled one)."""
        if not self.closed:
            for choice in choices:
                self.offer(choice)

    def discovery_failed(self, error: Exception) -> None:
        show_error(f"Box annotator: could not look for other models: {error}")

    def changed(self, value=None) -> None:
        """The model, device or precision changed: load the chosen model (asking for a file
        or for a download first when the entry says so)."""
        name_or_path = self.combo.value
        if self.refreshing:
            return
        if name_or_path == CHOOSE_FILE:
            path, _ = QFileDialog.getOpenFileName(
                self.parent, "Model weights", "", "PyTorch weights (*.pth *.pt)"
            )
            if not path:  # back to the model in use, without loading it again
                self.select_in_use()
                return
            self.offer(ModelChoice(f"File: {path}", path))
            self.combo.value = path  # loads it through this handler
            return
        offered = next((c for c in self.choices if c.name_or_path == name_or_path), None)
        if offered is not None and offered.download:  # "... (download, ~N MB)": ask, then fetch
            self.select_in_use()
            self.download_row.offer(offered)
            return
        self.annotator.set_model(
            name_or_path,
            self.device.value,
            self.combo.current_choice,
            precision=self.precision.value,
        )

    def select_in_use(self) -> None:
        """Show the model in use (or being loaded) in the list again, without loading it."""
        source = self.annotator.model_source or self.annotator.scheduler.model_request
        self.refreshing = True
        try:
            self.combo.value = source.name_or_path if source else BUNDLED.name_or_path
        finally:
            self.refreshing = False

    def downloaded(self, choice: ModelChoice) -> None:
        """The download entry becomes the model's entry, which is selected and loaded."""
        if self.closed:
            return
        self.choices = [c for c in self.choices if c.name_or_path != choice.name_or_path]
        self.offer(choice)
        self.combo.value = choice.name_or_path  # loads it through changed()

    def use_file(self, path) -> None:
        """List a model file saved meanwhile (e.g. fine-tuned) and switch the annotator to it."""
        choice = own_weights_choice(Path(path))
        self.offer(choice)
        self.combo.value = choice.name_or_path  # loads it through changed()
