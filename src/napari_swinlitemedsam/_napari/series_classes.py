"""The "Classes" section working with an image series: one class list for the series, each
item's object classes saved with its masks and restored when the item is shown again.

The series' list lives in ``OUTDIR/classes.json``: opening a series that has one shows it;
opening one without takes the list now in the widget (and writes it there). Every change to
the list is written at once. Each item's classes go into its object table (``*_objects.csv``)
when the series saves its masks.
"""

from __future__ import annotations

import numpy as np
from napari.utils.notifications import show_error, show_info

from napari_swinlitemedsam._napari.class_list_panel import ClassListPanel
from napari_swinlitemedsam._napari.object_panel import ObjectPanel, layer_spacing
from napari_swinlitemedsam.annotation.class_list import ClassListError
from napari_swinlitemedsam.annotation.item_exports import image_length_unit
from napari_swinlitemedsam.annotation.object_classes import ObjectClasses
from napari_swinlitemedsam.annotation.series import ImageSeries
from napari_swinlitemedsam.io.image_files import LoadedImage


class SeriesClasses:
    """Links ``class_panel`` and ``object_panel`` to the open series (at most one)."""

    def __init__(self, class_panel: ClassListPanel, object_panel: ObjectPanel) -> None:
        self.class_panel = class_panel
        self.object_panel = object_panel
        self.series: ImageSeries | None = None
        class_panel.changed.connect(self._save_list)

    def series_opened(self, series: ImageSeries) -> None:
        """Show the series' class list (or give it the widget's)."""
        self.series = None  # no writes while the list is replaced
        try:
            if series.class_list_path.is_file():
                self.class_panel.replace_list(series.load_class_list())
        except ClassListError as error:
            show_error(
                f"{error}. The widget keeps its class list; fix or remove the file, then "
                "reopen the series."
            )
            return  # the broken file is left as it is, for the user to mend
        self.series = series
        if len(self.class_panel.class_list) and not series.class_list_path.is_file():
            self._save_list()

    def series_closed(self) -> None:
        self.series = None

    def save_options(self) -> dict:
        """What ``ImageSeries.save`` needs besides the masks: objects, class list, unit."""
        labels = self.object_panel.annotator.labels
        unit = None if labels is None else layer_spacing(labels, self.object_panel.unit_hint)[1]
        return {
            "objects": self.object_panel.objects,
            "class_list": self.class_panel.class_list,
            "unit": unit,
        }

    def item_shown(
        self, series: ImageSeries, index: int, saved: np.ndarray | None, loaded: LoadedImage
    ) -> None:
        """Item ``index`` (image ``loaded``) is shown with its ``saved`` labels (or none):
        restore their classes; volumes take the file's length unit."""
        self.object_panel.unit_hint = image_length_unit(loaded)
        self.object_panel.follow_annotator()
        if saved is None:
            self.object_panel.set_objects(ObjectClasses())
            return
        try:
            objects, messages = series.saved_classes(index, saved, self.class_panel.class_list)
        except (ValueError, OSError) as error:
            objects, messages = ObjectClasses(), [f"classes not restored: {error}"]
        self.object_panel.set_objects(objects)
        for message in messages:
            show_info(f"{series.names[index]}: {message}")

    def _save_list(self) -> None:
        if self.series is None:
            return
        try:
            self.class_panel.class_list.save(self.series.class_list_path)
        except OSError as error:
            show_error(f"The class list could not be written to {self.series.outdir}: {error}")
