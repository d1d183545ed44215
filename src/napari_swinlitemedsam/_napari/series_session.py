"""Labelling an :class:`~napari_swinlitemedsam.annotation.series.ImageSeries` in a viewer (no widgets).

A :class:`SeriesSession` shows one item of the series at a time: an image layer and a masks
layer (the labels saved for it, if any), with the :class:`Annotator` attached. Moving to another
item first saves the current masks through :meth:`ImageSeries.save`; when that fails, the
session stays where it is and nothing is lost. Masks are also saved when the masks layer is
removed (e.g. the viewer closes) and when the session is closed.

While the user works, :meth:`SeriesSession.background_job` offers one short job at a time for the
annotator's lowest-priority slot (the owner wires it in with ``Annotator.add_background``): read
and map the next item, then encode its first shown slice under the same cache key that the
annotator uses once the user moves there, so that the first box on it decodes at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from napari.layers import Image, Labels
from napari.utils.notifications import show_error

from napari_swinlitemedsam._napari.annotator import Annotator
from napari_swinlitemedsam.annotation.jobs import BackgroundJob, PrefetchJob
from napari_swinlitemedsam.annotation.series import ImageSeries, ItemState, neighbours_to_prefetch
from napari_swinlitemedsam.annotation.slice_work import encode_slice, read_and_prepare
from napari_swinlitemedsam.inference import intensity
from napari_swinlitemedsam.io.image_files import LoadedImage


class SeriesMoveError(RuntimeError):
    """The session could not move to another item (the current one could not be saved, or the
    new one could not be read); it stays on the current item."""


def item_key(path: Path) -> tuple:
    """What identifies an image file's pixels in the predictor's in-memory cache."""
    info = path.stat()
    return ("series-item", str(path.resolve()), info.st_mtime_ns, info.st_size)


def spatial_shape(loaded: LoadedImage) -> tuple[int, ...]:
    """``(H, W)`` or ``(D, H, W)`` of a loaded image (a colour axis dropped)."""
    shape = loaded.data.shape
    return tuple(shape) if loaded.is_stack or len(shape) == 2 else tuple(shape[:2])


def first_slice(shape: tuple[int, ...]) -> int | None:
    """The slice shown first for an image of spatial ``shape``: the middle one of a stack."""
    return shape[0] // 2 if len(shape) == 3 else None


@dataclass
class _Prefetched:
    index: int
    key: tuple | None = None
    loaded: LoadedImage | None = None
    prepared: np.ndarray | None = None
    encoded: set = field(default_factory=set)
    failed: bool = False


def _quietly(job: Callable) -> Callable:
    """``job`` returning None instead of raising: prefetching is only an optimisation."""

    def run(*args):
        try:
            return job(*args)
        except Exception:  # noqa: BLE001 - the file or slice is read again when the user goes there
            return None

    return run


class SeriesSession:
    """One series in ``viewer``, annotated through ``annotator``.

    ``skip_done``: Next / Previous pass over done items. ``on_change`` is called after every
    move, save or state change (the panel refreshes its list).
    """

    def __init__(
        self,
        viewer,
        annotator: Annotator,
        series: ImageSeries,
        skip_done: bool = False,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.viewer = viewer
        self.annotator = annotator
        self.series = series
        self.skip_done = skip_done
        self.on_change = on_change
        self.current: int | None = None
        self.loaded: LoadedImage | None = None
        self.image_layer = None
        self.labels_layer: Labels | None = None
        self.direction = 1
        self.last_saved = False  # whether the last save wrote a file
        self._prefetched: _Prefetched | None = None
        self._replacing = False
        self._closed = False
        self.classes = None  # a SeriesClasses: object classes saved and restored per item
        viewer.layers.events.removed.connect(self._on_layer_removed)

    # ------------------------------------------------------------------ moving
    def start(self) -> None:
        """Show the item the user was on last time (with ``skip_done``, the first unfinished one
        when that item is done). Raises SeriesMoveError when it cannot be read."""
        index = self.series.current
        if self.skip_done and self.series.state(index) == ItemState.DONE:
            first = self.series.first_unfinished()
            index = index if first is None else first
        self.go_to(index)

    def step(self, direction: int) -> bool:
        """Go to the next (+1) or previous (-1) item; False at either end."""
        if self.current is None:
            return False
        self.series.current = self.current
        target = self.series.neighbour(direction, self.skip_done)
        if target is None:
            return False
        self.go_to(target)
        return True

    def go_to(self, index: int) -> None:
        """Save the current masks, then show item ``index`` with its saved labels.

        Raises SeriesMoveError (after telling the user) when the masks cannot be saved or the
        item cannot be read; the current item then stays shown, its masks untouched.
        """
        if index == self.current:
            return
        if not 0 <= index < len(self.series):
            raise SeriesMoveError(
                f"item {index} is outside the series of {len(self.series)} images"
            )
        if not self.save():
            raise SeriesMoveError("the current masks could not be saved")
        name = self.series.names[index]
        try:
            loaded, prepared, key = self._read(index)
            saved = self.series.saved_labels(index, loaded)
            shape = spatial_shape(loaded)
            if saved is not None and tuple(saved.shape) != shape:
                raise ValueError(
                    f"the saved labels {self.series.saved_label_path(index)} have shape "
                    f"{tuple(saved.shape)}, the image {shape}; move the labels file away to start "
                    "this image afresh"
                )
        except Exception as error:
            message = f"Cannot open {name}: {error}"
            show_error(message)
            raise SeriesMoveError(message) from error
        if self.current is not None:
            self.direction = 1 if index > self.current else -1
        self._show(index, loaded, prepared, key, saved)
        if self.classes is not None:
            self.classes.item_shown(self.series, index, saved, loaded)
        try:
            self.series.go_to(index)
        except OSError as error:
            show_error(f"The progress file in {self.series.outdir} could not be written: {error}")
        self.on_change()

    @property
    def replacing(self) -> bool:
        """True while the layers of one item are being replaced by those of another."""
        return self._replacing

    def _read(self, index: int):
        cached = self._prefetched
        key = item_key(self.series.items[index])
        if (
            cached is not None
            and cached.index == index
            and cached.key == key
            and cached.loaded is not None
        ):
            return cached.loaded, cached.prepared, key
        return self.series.read(index), None, key

    def _show(self, index, loaded: LoadedImage, prepared, key, saved) -> None:
        """Replace the layers of the current item by those of ``index``."""
        shape = spatial_shape(loaded)
        name = self.series.names[index]
        self._replacing = True
        try:
            old_layers = self._item_layers()
            self.annotator.detach()
            for layer in old_layers:
                self.viewer.layers.remove(layer)
            options = {}
            if loaded.spacing is not None and len(loaded.spacing) == len(shape):
                options["scale"] = loaded.spacing
            if not (loaded.data.ndim == 3 and not loaded.is_stack):
                options["contrast_limits"] = intensity.display_range(loaded.data)
            # The layers are made here and kept: what the viewer hands back may be napari's
            # public-only proxy of them, which is not the layer its events carry.
            image = Image(
                loaded.data, name=name, rgb=loaded.data.ndim == 3 and not loaded.is_stack, **options
            )
            labels = (
                np.zeros(shape, np.uint16)
                if saved is None
                else saved.astype(np.uint16 if saved.max(initial=0) < 65536 else np.uint32)
            )
            masks = Labels(
                labels, name=f"{name} masks", scale=image.scale, translate=image.translate
            )
            self.viewer.add_layer(image)
            self.viewer.add_layer(masks)
            z = first_slice(shape)
            if z is not None:
                self.viewer.dims.set_current_step(0, z)
            self.viewer.reset_view()
            self.annotator.attach(image, masks, image_key=key, prepared=prepared)
        finally:
            self._replacing = False
        self.current, self.loaded = index, loaded
        self.image_layer, self.labels_layer = image, masks
        if self._prefetched is not None and self._prefetched.index == index:
            self._prefetched = None

    def _item_layers(self) -> list:
        annotator = self.annotator
        ours = [annotator.boxes, annotator.points, self.labels_layer, self.image_layer]
        layers = []
        for layer in ours + [annotator.labels, annotator.image]:
            if layer is not None and layer in self.viewer.layers and layer not in layers:
                layers.append(layer)
        return layers

    # ------------------------------------------------------------------ saving
    def save(self, labels: np.ndarray | None = None) -> bool:
        """Save the current item's masks (unchanged masks touch no file); True when they are on
        disk. On failure the user is told and False is returned; the masks stay in the layer."""
        if self.current is None:
            return True
        if labels is None:
            if self.labels_layer is None:
                return True
            labels = self.labels_layer.data
        index = self.current
        if self.series.saved_label_path(index) is None and not np.any(labels):
            self.last_saved = False
            return True  # nothing painted and nothing saved before: no empty file
        try:
            options = {} if self.classes is None else self.classes.save_options()
            self.last_saved = self.series.save(index, np.asarray(labels), self.loaded, **options)
        except Exception as error:  # noqa: BLE001 - disk full, read-only folder, bad labels...
            show_error(
                f"Masks of {self.series.names[index]} could NOT be saved to "
                f"{self.series.label_path(index)} ({type(error).__name__}: {error}). They are "
                "still in the masks layer: fix the folder (or choose another output folder) and "
                "save again."
            )
            return False
        self.on_change()
        return True

    def set_done(self, done: bool) -> bool:
        """Save the current masks and mark the item done (or back in progress)."""
        if self.current is None or not self.save():
            return False
        try:
            self.series.mark_done(self.current, done)
        except OSError as error:
            show_error(f"The progress file in {self.series.outdir} could not be written: {error}")
            return False
        self.on_change()
        return True

    def _on_layer_removed(self, event) -> None:
        """The masks layer left the viewer (the user removed it, or the viewer is closing):
        keep what was painted."""
        removed = event.value
        if not self._replacing and removed is not None and removed is self.labels_layer:
            self.save(event.value.data)
            self.labels_layer = None

    # ------------------------------------------------------------------ prefetch
    def background_job(self) -> BackgroundJob | None:
        """One short job for the annotator's idle time: read the next item, then encode its
        first shown slice (under the key it will be annotated with)."""
        if self._closed or self.current is None or self.annotator.predictor is None:
            return None
        done = [i for i, s in enumerate(self.series.states()) if s == ItemState.DONE]
        targets = neighbours_to_prefetch(
            self.current,
            len(self.series),
            direction=self.direction,
            skip_items=done if self.skip_done else (),
        )
        if not targets:
            return None
        index = targets[-1].item
        cached = self._prefetched
        if cached is None or cached.index != index:
            path = self.series.items[index]
            try:
                key = item_key(path)
            except OSError:
                return None
            self._prefetched = cached = _Prefetched(index, key)

            def read(result) -> None:
                if self._prefetched is cached:
                    if result is None:
                        cached.failed = True
                    else:
                        cached.loaded, cached.prepared = result

            return BackgroundJob(_quietly(read_and_prepare), (path,), read)
        if cached.failed or cached.loaded is None:
            return None
        z = first_slice(spatial_shape(cached.loaded))
        if z in cached.encoded:
            return None

        def encoded(result) -> None:
            cached.encoded.add(z)  # also when it failed: not tried again

        args = (self.annotator.predictor, cached.prepared, PrefetchJob(cached.key, z))
        return BackgroundJob(_quietly(encode_slice), args, encoded)

    @property
    def prefetched(self) -> _Prefetched | None:
        """What was read / encoded ahead for the next item."""
        return self._prefetched

    # ------------------------------------------------------------------ closing
    def close(self) -> bool:
        """Save the current masks and let go of the viewer; True when they are on disk.
        (:meth:`background_job` offers nothing from now on.)"""
        if self._closed:
            return True
        saved = self.save()
        self._closed = True
        self.viewer.layers.events.removed.disconnect(self._on_layer_removed)
        return saved
