"""``swinlitemedsam annotate``: open napari with the Box annotator docked."""

from __future__ import annotations

PLUGIN = "napari-swinlitemedsam"
WIDGET = "Box annotator"


def open_viewer(
    files: list[str],
    sample: str,
    series=None,
    skip_done: bool = False,
    disk_cache=None,
    read_ahead_bytes: int | None = None,
):
    """A napari viewer with the annotator docked, showing ``files``, or the current item of
    ``series`` (an :class:`~napari_swinlitemedsam.annotation.series.ImageSeries`; ``files`` are then
    not opened separately), or else the bundled ``sample``.

    ``disk_cache``: a DiskEmbeddingCache the annotator's model reads and stores encoded slices in.
    ``read_ahead_bytes``: the read-ahead budget of lazy stacks (None: the default).
    Returns ``(viewer, widget)``; the viewer is shown but the event loop is not started.
    """
    import napari

    from napari_swinlitemedsam.io.zarr_stacks import is_zarr_path

    viewer = napari.Viewer(title="Swin-LiteMedSAM box annotator")
    if series is None:
        if files:
            for path in files:
                # zarr stores through this plugin's lazy reader (napari's own would ask which)
                viewer.open(path, plugin=PLUGIN if is_zarr_path(path) else None)
        else:
            viewer.open_sample(PLUGIN, sample)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    if read_ahead_bytes is not None:
        widget.annotator.set_read_ahead(read_ahead_bytes)
    if disk_cache is not None:
        widget.set_disk_cache(disk_cache)
    if series is not None:
        widget.series_panel.set_series(series, skip_done=skip_done)
    return viewer, widget


def launch_viewer(
    files: list[str],
    sample: str,
    series=None,
    skip_done: bool = False,
    disk_cache=None,
    read_ahead_bytes: int | None = None,
) -> int:
    """Open the viewer and run napari's event loop until the window is closed; returns 0."""
    import napari

    open_viewer(list(files), sample, series, skip_done, disk_cache, read_ahead_bytes)
    napari.run()
    return 0
