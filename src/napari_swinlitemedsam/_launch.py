"""``swinlitemedsam annotate``: open napari with the Box annotator docked."""

from __future__ import annotations

PLUGIN = "napari-swinlitemedsam"
WIDGET = "Box annotator"


def open_viewer(files: list[str], sample: str):
    """A napari viewer showing ``files`` (or the bundled ``sample``) with the annotator docked.

    Returns ``(viewer, widget)``; the viewer is shown but the event loop is not started.
    """
    import napari

    viewer = napari.Viewer(title="Swin-LiteMedSAM box annotator")
    if files:
        viewer.open(files)
    else:
        viewer.open_sample(PLUGIN, sample)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    return viewer, widget


def launch_viewer(files: list[str], sample: str) -> int:
    """Open the viewer and run napari's event loop until the window is closed; returns 0."""
    import napari

    open_viewer(list(files), sample)
    napari.run()
    return 0
