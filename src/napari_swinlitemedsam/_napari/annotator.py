"""The annotator: layers, model jobs and bookkeeping behind the Box annotator widget (no widgets).

One :class:`Annotator` per dock widget. It owns the predictor, a :class:`JobRunner` that runs one
model job at a time, the layers it created (boxes, masks, clicks) and an
:class:`AnnotatorState`. Layer events only record what must be (re)decoded and call
:meth:`Annotator.schedule`, which starts the next job when the runner is idle:
load model > prepare image > decode queued boxes > propagate > encode the current slice >
prefetch (lowest priority, one slice per job: the neighbouring slices of a stack, then whatever
:attr:`Annotator.background` offers, e.g. the next image of a series).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Hashable

import numpy as np
from napari.layers import Image, Labels
from napari.utils.notifications import show_error, show_info

from napari_swinlitemedsam._napari import layer_io
from napari_swinlitemedsam._napari.annotator_jobs import SliceJobs
from napari_swinlitemedsam._napari.workers import (
    DecodeRequest,
    JobProgress,
    JobRunner,
    load_predictor,
    prepare_image,
)
from napari_swinlitemedsam.annotation.annotator_state import AnnotatorState, SliceKey
from napari_swinlitemedsam.annotation.failure_messages import explain_failure

FINISHED_ACTIONS = ("added", "changed", "removed")


class Annotator(SliceJobs):
    """Box -> mask annotation on one image layer of ``viewer``; reports through ``on_status``."""

    def __init__(self, viewer, on_status: Callable[[str], None] = lambda text: None) -> None:
        self.viewer = viewer
        self.on_status = on_status
        self.runner = JobRunner(on_idle=self.schedule, on_error=self._job_failed)
        self.predictor = None
        self.model_label = ""
        self._model_request: tuple[str, str, str] | None = None
        self.disk_cache = None  # DiskEmbeddingCache given to every predictor loaded
        #: Lowest-priority work when nothing else is to do: a callable returning None or
        #: ``(job, args, on_return)`` for one short job (one slice encode or one file read).
        self.background: Callable[[], tuple | None] | None = None
        self.prefetch_radius = 2  # neighbouring slices of a stack encoded ahead
        self._slice_direction = 1
        self._last_slice: SliceKey = None
        self.overwrite = False
        self.extend_object = False
        self.state = AnnotatorState()
        self.image: Image | None = None
        self.boxes = self.labels = self.points = None
        self.active_object: int | None = None
        self.last_decode_seconds: float | None = None
        self.last_error = ""
        self._image_u8: np.ndarray | None = None
        self._token = ""
        self._image_key = ""
        self.window = None  # intensity window for the model (see set_window)
        self._pending: dict[SliceKey, set[int]] = {}
        self._propagate_queue: list[int] = []
        self._encoded: set[SliceKey] = set()
        self._undo_group = layer_io.UndoGroup()
        self.progress = JobProgress(self.runner)
        self._syncing = False
        self._stalled = False  # automatic work failed: wait for the user before trying again
        viewer.layers.events.removed.connect(self._on_layer_removed)
        viewer.dims.events.current_step.connect(self._on_slice_changed)

    # ----------------------------------------------------------------- model and image
    def set_model(
        self, name_or_path: str, device: str = "auto", label: str = "", disk_cache=None
    ) -> None:
        """Load another model in the background; queued boxes wait for it.

        ``disk_cache``: a DiskEmbeddingCache for this and later models (None keeps the current one).
        """
        if disk_cache is not None:
            self.disk_cache = disk_cache
        self.predictor = None
        self._encoded.clear()
        self._model_request = (str(name_or_path), device, label or str(name_or_path))
        self.user_acted()

    def set_disk_cache(self, disk_cache) -> None:
        """Use ``disk_cache`` (a DiskEmbeddingCache or None) now and for later models."""
        self.disk_cache = disk_cache
        if self.predictor is not None:
            self.predictor.disk_cache = disk_cache

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
        new key. ``prepared``: the image as :func:`prepare_image` maps it, when already known.

        Raises :class:`ImageLayerError` (and keeps annotating the current image) when the image
        cannot be annotated or ``labels`` is not shaped like it.
        """
        shape = layer_io.spatial_shape(image)
        if labels is not None and tuple(labels.data.shape) != shape:
            raise layer_io.ImageLayerError(
                f"the labels layer '{labels.name}' has shape {tuple(labels.data.shape)}, "
                f"the image {shape}; choose a labels layer shaped like the image (or a new one)"
            )
        previous_labels = self.labels
        self.detach()
        self._image_key = uuid.uuid4().hex if image_key is None else image_key
        self.image, self._token = image, self._windowed_key()
        self._image_u8 = prepared
        self.labels = (
            labels
            if labels is not None
            else self.viewer.add_layer(layer_io.make_labels_layer(image))
        )
        if self.labels is not previous_labels:
            self.state.forget_issued_ids()  # ids count from the new layer's own maximum
        self.points = self.viewer.add_layer(layer_io.make_points_layer(image))
        self.boxes = self.viewer.add_layer(layer_io.make_box_layer(image))
        self.boxes.events.data.connect(self._on_boxes_changed)
        self.boxes.events.features.connect(self._on_boxes_pasted)
        self.points.events.data.connect(self._on_clicks_changed)
        image.events.data.connect(self._on_image_data_changed)
        self.viewer.layers.selection.active = self.boxes
        self.boxes.mode = "add_rectangle"
        self.user_acted()

    def detach(self) -> None:
        """Stop annotating the current image; its layers stay in the viewer."""
        if self.image is None:
            return
        if self.runner.kind not in ("load", "prefetch"):  # still wanted; prefetch checks keys
            self.runner.cancel()
        self._undo_group.close()
        for layer, handler in (
            (self.boxes, self._on_boxes_changed),
            (self.points, self._on_clicks_changed),
            (self.image, self._on_image_data_changed),
        ):
            if layer is not None:
                layer.events.data.disconnect(handler)
        if self.boxes is not None:
            self.boxes.events.features.disconnect(self._on_boxes_pasted)
        self.image = self.boxes = self.labels = self.points = None
        self._image_u8, self._token, self.active_object = None, "", None
        self._last_slice, self._slice_direction = None, 1
        self._pending.clear()
        self._propagate_queue.clear()
        self._encoded.clear()
        self.state.reset()

    @property
    def is_stack(self) -> bool:
        return self.image is not None and len(layer_io.spatial_shape(self.image)) == 3

    def current_slice(self) -> SliceKey:
        """The slice shown in the viewer (``None`` for a 2D image)."""
        if not self.is_stack:
            return None
        z = self.image.world_to_data(self.viewer.dims.point)[0]
        return int(np.clip(np.floor(z + 0.5), 0, self.image.data.shape[0] - 1))

    # ----------------------------------------------------------------- layer events
    def _on_boxes_changed(self, event) -> None:
        if str(getattr(event, "action", "")) in FINISHED_ACTIONS:
            self.sync_boxes()

    def _on_boxes_pasted(self, event=None) -> None:
        self.sync_boxes()  # pasting emits only a features event; syncing twice is harmless

    def state_ids(self) -> list[int]:
        """The object id of each shape of the box layer, in layer order (0 = none)."""
        return [] if self.boxes is None else [int(i) for i in layer_io.object_ids(self.boxes)]

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
        shape = layer_io.spatial_shape(self.image)
        extend = self.active_object if self.extend_object else None
        sync = self.state.sync_boxes(
            layer_io.read_boxes(self.boxes, shape), int(np.max(self.labels.data, initial=0)), extend
        )
        layer_io.write_box_ids(self.boxes, sync.ids, self.labels)
        if sync.removed:
            with self.labels.block_history():
                for object_id, z in sync.removed:
                    whole = object_id in sync.deleted_objects
                    layer_io.erase_object(self.labels, object_id, None if whole else z)
                    self._pending.get(z, set()).discard(object_id)
        for object_id, z in sync.added + sync.moved:
            self._pending.setdefault(z, set()).add(object_id)
            self.active_object = object_id
        if sync.added:
            self.labels.selected_label = sync.added[-1][0]
        if sync.changed:
            self.user_acted()

    def _on_clicks_changed(self, event) -> None:
        if str(getattr(event, "action", "")) not in FINISHED_ACTIONS or self.points is None:
            return
        for object_id, z in self.state.sync_points(layer_io.read_clicks(self.points)):
            self._pending.setdefault(z, set()).add(object_id)
        self.user_acted()

    def _on_slice_changed(self, event=None) -> None:
        if self.is_stack:
            current = self.current_slice()
            if self._last_slice is not None and current != self._last_slice:
                self._slice_direction = 1 if current > self._last_slice else -1
            self._last_slice = current
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
            self._image_u8, self._token = None, self._windowed_key()
            self._encoded.clear()
        self.user_acted()

    def _windowed_key(self):
        """The cache key of the current image as mapped with the current window."""
        if self.window is None:
            return self._image_key
        return f"{self._image_key}|window={self.window}"

    def _on_image_data_changed(self, event=None) -> None:
        self._image_key = uuid.uuid4().hex
        self._image_u8, self._token = None, self._windowed_key()
        self._encoded.clear()
        self.user_acted()

    def _on_layer_removed(self, event) -> None:
        layer = event.value
        if layer is self.points:
            self.points.events.data.disconnect(self._on_clicks_changed)
            self.points = None
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
        if object_id is None or object_id not in self.state.objects:
            show_info("Draw a box first (or select one): propagation follows that box's object.")
            return
        if object_id not in self._propagate_queue:
            self._propagate_queue.append(object_id)
        self.user_acted()

    def selected_object(self) -> int | None:
        """The object of the selected box, else the last object drawn or edited."""
        if self.boxes is not None and self.boxes.selected_data:
            ids = self.state_ids()
            index = max(self.boxes.selected_data)
            if index < len(ids) and ids[index] > 0:
                return int(ids[index])
        return self.active_object

    def cancel(self) -> None:
        """Stop a running propagation (slices already written stay, undoable in one step)."""
        self._propagate_queue.clear()
        if self.runner.kind == "propagate":
            self.runner.stop()
            self.on_status("Stopping propagation...")

    def set_click_sign(self, positive: bool) -> None:
        if self.points is not None:
            layer_io.set_click_sign(self.points, positive)

    # ----------------------------------------------------------------- job scheduling
    def user_acted(self) -> None:
        """The user did something (a box, a click, another slice, image or model): work that
        failed on its own is tried again, then the most urgent job starts."""
        self._stalled = False
        self.schedule()

    def schedule(self) -> None:
        """Start the most urgent job if none is running."""
        if self.runner.busy:
            return
        if self._model_request is not None:
            return self._start_model_load()
        if self.predictor is None:
            if self.last_error:
                return self.on_status(
                    f"No model: {self.last_error}. Choose another model or device."
                )
            return self.on_status("Choose a model to start")
        if self.image is None:
            return self.on_status(f"{self.model_label} ready: choose an image layer")
        if self._image_u8 is None:
            return None if self._stalled else self._start_prepare()
        current = self.current_slice()
        while self._pending:
            z = current if current in self._pending else next(iter(self._pending))
            ids, boxes, points, labels = self.state.decode_request(z, sorted(self._pending.pop(z)))
            if ids:
                return self._start_decode(DecodeRequest(z, ids, boxes, points, labels))
        if self._propagate_queue:
            return self._start_propagation(self._propagate_queue.pop(0))
        if self._stalled:
            return None  # the status line shows what failed
        if current not in self._encoded:
            return self._start_encode(current)
        count = len(self.state.objects)
        self.on_status(f"Ready: {count} object{'s' * (count != 1)}. Draw a box to add one.")
        self._start_prefetch(current)

    def _start_model_load(self) -> None:
        name, device, label = self._model_request
        self._model_request = None
        self.on_status(f"Loading {label}...")

        def loaded(result) -> None:
            if self._model_request is not None:
                return  # another model was chosen meanwhile; it loads next
            self.predictor, seconds = result
            self.predictor.disk_cache = self.disk_cache  # it may have been set during the load
            self.model_label, self.last_error = label, ""
            self.on_status(f"{label} loaded in {seconds:.1f} s")

        args = (name, device, self.disk_cache)
        self.runner.start("load", load_predictor, args, on_return=loaded, on_done=self.progress.end)
        self.progress.show(f"Loading {label}")

    def _start_prepare(self) -> None:
        self.on_status(f"Reading '{self.image.name}'...")
        token = self._token

        def prepared(array) -> None:
            if token == self._token:
                self._image_u8 = array

        self.runner.start(
            "prepare",
            prepare_image,
            (self.image.data, self.is_stack, self.window),
            on_return=prepared,
        )

    def _job_failed(self, error: Exception) -> None:
        """Report a failed job; a propagation's slices written so far are taken back."""
        self._undo_group.close(roll_back=True)
        self._stalled = self.runner.kind in ("prepare", "encode", "prefetch")
        self.last_error = explain_failure(error, self.runner.kind)
        self.on_status(f"Error: {self.last_error}")
        show_error(f"Box annotator: {self.last_error}")
        self.progress.end()

    def close(self) -> bool:
        """Stop all work, wait for the running thread, and let go of the viewer."""
        ended = self.runner.close()
        self.detach()
        self._undo_group.close()
        self.progress.end()
        self.viewer.layers.events.removed.disconnect(self._on_layer_removed)
        self.viewer.dims.events.current_step.disconnect(self._on_slice_changed)
        return ended
