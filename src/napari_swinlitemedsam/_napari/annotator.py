"""The annotator: layers and model jobs behind the Box annotator widget (no widgets).

One :class:`Annotator` per dock widget, composed of an ``AnnotatorState`` (which box belongs to
which object) and a ``SliceScheduler`` (what to run next), both headless, a :class:`JobRunner`
that runs the scheduler's typed jobs one at a time (their work is in ``annotation.slice_work``;
how each starts and where its result goes, in :mod:`.annotator_jobs`), and the
:class:`AnnotationLayers` of the image. Layer events tell the scheduler what changed and
call :meth:`Annotator.schedule`; results come back on the GUI thread and enter the masks layer
through ``Labels.data_setitem`` (one undo step each).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Hashable

import numpy as np
from napari.layers import Image, Labels
from napari.utils.notifications import show_info

from napari_swinlitemedsam._napari import layer_io
from napari_swinlitemedsam._napari.annotation_layers import AnnotationLayers
from napari_swinlitemedsam._napari.annotator_jobs import AnnotatorJobs
from napari_swinlitemedsam._napari.mask_storage import MaskStorage
from napari_swinlitemedsam._napari.workers import JobProgress, JobRunner
from napari_swinlitemedsam.annotation import jobs
from napari_swinlitemedsam.annotation.annotator_state import AnnotatorState, SliceKey
from napari_swinlitemedsam.annotation.jobs import JobKind
from napari_swinlitemedsam.annotation.scheduler import (
    BackgroundSource,
    Situation,
    SliceScheduler,
)
from napari_swinlitemedsam.inference.read_ahead import DEFAULT_READ_AHEAD_BYTES

FINISHED_ACTIONS = ("added", "changed", "removed")


class Annotator:
    """Box -> mask annotation on one image layer of ``viewer``; reports through ``on_status``."""

    def __init__(self, viewer, on_status: Callable[[str], None] = lambda text: None) -> None:
        self.viewer = viewer
        self.on_status = on_status
        self.job_starter = AnnotatorJobs(self)
        self.runner = JobRunner(on_idle=self.schedule, on_error=self.job_starter.failed)
        self.progress = JobProgress(self.runner)
        self.state = AnnotatorState()
        self.scheduler = SliceScheduler(self.state)
        self.predictor = None
        self.model_label = ""
        self.model_source: jobs.LoadModelJob | None = None  # what the predictor was loaded from
        self.disk_cache = None  # DiskEmbeddingCache given to every predictor loaded
        self.overwrite = False
        self.extend_object = False
        self.reference_propagation = False  # the reference scripts' rules, for comparisons
        self.layers: AnnotationLayers | None = None
        self.mask_storage = MaskStorage()  # where new masks layers live (memory or a store)
        self.read_ahead_bytes = DEFAULT_READ_AHEAD_BYTES  # decoded slices kept, lazy stacks
        self.active_object: int | None = None
        self.last_decode_seconds: float | None = None
        self.last_error = ""
        self._image_u8: np.ndarray | None = None
        self._image_key: Hashable = ""  # the pixels' identity; the cache key adds the window
        self.window = None  # intensity window for the model (see set_window)
        self._undo_group = layer_io.UndoGroup()
        self._syncing = False
        viewer.layers.events.removed.connect(self._on_layer_removed)
        viewer.dims.events.current_step.connect(self._on_slice_changed)

    # ----------------------------------------------------------------- model and image
    def set_model(
        self,
        name_or_path: str,
        device: str = "auto",
        label: str = "",
        disk_cache=None,
        precision: str = "auto",
    ) -> None:
        """Load another model in the background; queued boxes wait for it.

        ``disk_cache``: a DiskEmbeddingCache for this and later models (None keeps the current
        one). ``precision``: of the image encoder, ``"auto"``, ``"fp32"``, ``"bf16"`` or
        ``"fp16"`` (CUDA only).
        """
        if disk_cache is not None:
            self.disk_cache = disk_cache
        self.predictor = None
        label = label or str(name_or_path)
        self.scheduler.model_chosen(jobs.LoadModelJob(str(name_or_path), device, label, precision))
        self.user_acted()

    def set_disk_cache(self, disk_cache) -> None:
        """Use ``disk_cache`` (a DiskEmbeddingCache or None) now and for later models."""
        self.disk_cache = disk_cache
        if self.predictor is not None:
            self.predictor.disk_cache = disk_cache

    def set_read_ahead(self, max_bytes: int) -> None:
        """Keep up to ``max_bytes`` of decoded slices of a lazy stack; a stack already read is
        read again with the new budget (its intensity sample only)."""
        self.read_ahead_bytes = int(max_bytes)
        kept = getattr(self._image_u8, "read_ahead", None)
        if kept is not None and not self._image_u8.in_memory:
            self._image_u8 = None
            self.user_acted()

    def add_background(self, source: BackgroundSource) -> None:
        """Offer ``source``'s jobs when nothing else is to do (lowest priority, one at a time)."""
        self.scheduler.background.append(source)

    def remove_background(self, source: BackgroundSource) -> None:
        if source in self.scheduler.background:
            self.scheduler.background.remove(source)

    def attach(
        self,
        image: Image,
        labels: Labels | None = None,
        image_key: Hashable | None = None,
        prepared: np.ndarray | None = None,
    ) -> None:
        """Annotate ``image``: create the box, mask (unless ``labels`` is given) and click layers.

        ``image_key``: identifies the pixels in the predictor's cache (slices are cached under
        ``(image_key, z)``), so slices encoded ahead under the same key are reused; default: a
        new key. ``prepared``: the image as :func:`~.slice_work.prepare_image` maps it, when
        already known.

        A new masks layer lives in memory or in a zarr store on disk as ``mask_storage``
        decides (:class:`.MaskStorage`; ``masks_store`` says where).

        Raises :class:`ImageLayerError` (and keeps annotating the current image) when the image
        cannot be annotated, ``labels`` is not shaped like it, or the masks store cannot be made.
        """
        AnnotationLayers.check(image, labels)  # refused before the current image is let go
        new_masks = None if labels is not None else self.mask_storage.make_layer(image)
        previous_labels = self.labels
        self.detach()
        self._image_key = uuid.uuid4().hex if image_key is None else image_key
        self.layers = AnnotationLayers(self.viewer, image, labels, new_masks)
        self._image_u8 = prepared
        self.scheduler.attach(self._windowed_key())
        if self.labels is not previous_labels:
            self.state.forget_issued_ids()  # ids count from the new layer's own maximum
        self.layers.connect(
            self._on_boxes_changed,
            self._on_boxes_pasted,
            self._on_clicks_changed,
            self._on_image_data_changed,
        )
        self.viewer.layers.selection.active = self.boxes
        self.boxes.mode = "add_rectangle"
        self.scheduler.slice_shown(self.current_slice())
        self.user_acted()

    def detach(self) -> None:
        """Stop annotating the current image; its layers stay in the viewer."""
        if self.layers is None:
            return
        if self.runner.kind not in (JobKind.LOAD_MODEL, JobKind.PREFETCH, JobKind.BACKGROUND):
            self.runner.cancel()  # a model load is still wanted; prefetches check their key
        self._undo_group.close()
        self.layers.disconnect()
        self.layers = None
        self._image_u8, self.active_object = None, None
        self.scheduler.detach()
        self.state.reset()

    @property
    def image(self) -> Image | None:
        return None if self.layers is None else self.layers.image

    @property
    def labels(self) -> Labels | None:
        return None if self.layers is None else self.layers.labels

    @property
    def prepared_image(self):
        """The image as the model sees it (a lazy VolumeSlices for a stack), None until read."""
        return self._image_u8

    @property
    def masks_store(self):
        """The zarr store the masks are written to (None: in memory, or the user's layer)."""
        return None if self.layers is None else self.layers.masks_store

    @property
    def boxes(self):
        return None if self.layers is None else self.layers.boxes

    @property
    def points(self):
        return None if self.layers is None else self.layers.points

    @property
    def image_key(self) -> Hashable | None:
        """What identifies the annotated pixels in the predictor's cache (None: no image)."""
        return self.scheduler.image_key

    @property
    def is_stack(self) -> bool:
        return self.layers is not None and self.layers.is_stack

    def current_slice(self) -> SliceKey:
        """The slice shown in the viewer (``None`` for a 2D image)."""
        return None if self.layers is None else self.layers.current_slice(self.viewer)

    def _depth(self) -> int | None:
        return None if self.layers is None else self.layers.depth

    # ----------------------------------------------------------------- layer events
    def _on_boxes_changed(self, event) -> None:
        if str(getattr(event, "action", "")) in FINISHED_ACTIONS:
            self.sync_boxes()

    def _on_boxes_pasted(self, event=None) -> None:
        self.sync_boxes()  # syncing twice is harmless

    def sync_boxes(self) -> None:
        """Reconcile objects with the box layer; queue decodes, erase masks of deleted boxes."""
        if self.boxes is None or self.labels is None or self._syncing:
            return
        self._syncing = True  # writing the ids back emits a features event
        try:
            self._sync_boxes()
        finally:
            self._syncing = False

    def _sync_boxes(self) -> None:
        extend = self.active_object if self.extend_object else None
        shapes = self.layers.read_boxes()
        sync = self.state.sync_boxes(shapes, self.layers.highest_label(), extend)
        self.layers.apply_sync(sync)
        self.scheduler.boxes_synced(sync)
        for object_id, _ in sync.added + sync.moved:
            self.active_object = object_id
        if sync.changed:
            self.user_acted()
        clicks = [index for index, shape in enumerate(shapes) if shape.click]
        if clicks:  # a speck left in the layer would become an object once zoomed in
            self.layers.remove_boxes(clicks)
        if sync.refused:
            self.on_status(f"No object added: {sync.refused[-1]}")

    def _on_clicks_changed(self, event) -> None:
        if str(getattr(event, "action", "")) not in FINISHED_ACTIONS or self.points is None:
            return
        self.scheduler.clicks_changed(self.state.sync_points(layer_io.read_clicks(self.points)))
        self.user_acted()

    def _on_slice_changed(self, event=None) -> None:
        if self.is_stack:
            self.scheduler.slice_shown(self.current_slice())
            self.user_acted()

    def set_window(self, window) -> None:
        """The intensity window the model sees: None (automatic: CT soft tissue when the image
        holds air in HU, else the percentile rule), a CT preset name, or ``(low, high)``
        bounds (e.g. the layer's contrast limits). A change re-maps the image and re-encodes:
        the cache key includes the window."""
        if window is not None and not isinstance(window, str):
            window = tuple(float(bound) for bound in window)
        if window == self.window:
            return
        self.window = window
        if self.image is not None:
            self._image_u8 = None
            self.scheduler.image_changed(self._windowed_key())
        self.user_acted()

    def _windowed_key(self):
        """The cache key of the current image as mapped with the current window."""
        if self.window is None:
            return self._image_key
        return f"{self._image_key}|window={self.window}"

    def _on_image_data_changed(self, event=None) -> None:
        self._image_key = uuid.uuid4().hex
        self._image_u8 = None
        self.scheduler.image_changed(self._windowed_key())
        self.user_acted()

    def _on_layer_removed(self, event) -> None:
        layer = event.value
        if layer is not None and layer is self.points:
            self.layers.drop_points()
        elif layer is not None and layer in (self.image, self.boxes, self.labels):
            self.detach()
            self.on_status(f"'{layer.name}' was removed; choose an image to annotate")

    # ----------------------------------------------------------------- actions
    def propagate(self, object_id: int | None = None) -> None:
        """Take an object (default: the active one) through the stack from its key-slice boxes."""
        object_id = object_id if object_id is not None else self.selected_object()
        if not self.is_stack:
            show_info("Propagation needs a 3D stack; this image is 2D.")
            return
        if object_id is None or not self.scheduler.propagate(object_id):
            show_info("Draw a box first (or select one): propagation follows that box's object.")
            return
        self.user_acted()

    def selected_object(self) -> int | None:
        """The object of the selected box, else the last object drawn or edited."""
        selected = None if self.layers is None else self.layers.selected_object()
        return selected if selected is not None else self.active_object

    def cancel(self) -> None:
        """Stop a running propagation (slices already written stay, undoable in one step)."""
        self.scheduler.cancel_propagations()
        if self.runner.kind is JobKind.PROPAGATE:
            self.runner.stop()
            self.on_status("Stopping propagation...")

    def set_click_sign(self, positive: bool) -> None:
        if self.points is not None:
            layer_io.set_click_sign(self.points, positive)

    # ----------------------------------------------------------------- jobs
    def user_acted(self) -> None:
        """The user did something (a box, a click, another slice, image or model): work that
        failed on its own is tried again, then the most urgent job starts."""
        self.scheduler.user_acted()
        self.schedule()

    def schedule(self) -> None:
        """Start the most urgent job if none is running."""
        if self.runner.busy:
            return
        plan = self.scheduler.next_job(
            Situation(
                model_label=self.model_label if self.predictor is not None else "",
                last_error=self.last_error,
                image_ready=self._image_u8 is not None,
                current=self.current_slice(),
                depth=self._depth(),
            )
        )
        if plan.status is not None:
            self.on_status(plan.status)
        if plan.job is not None:
            self.job_starter.start(plan.job)

    def close(self) -> bool:
        """Stop all work, wait for the running thread, and let go of the viewer."""
        ended = self.runner.close()
        self.detach()
        self._undo_group.close()
        self.progress.end()
        self.viewer.layers.events.removed.disconnect(self._on_layer_removed)
        self.viewer.dims.events.current_step.disconnect(self._on_slice_changed)
        return ended
