"""What the annotator does next, decided without Qt or napari.

One :class:`SliceScheduler` per annotator. Layer events tell it what changed (boxes synced, clicks
changed, another slice shown, another image or model); :meth:`SliceScheduler.next_job` then
returns the most urgent job of :mod:`.jobs`:

load the model > prepare the image > decode queued boxes (the slice on screen first) >
propagate (in the order asked) > encode the slice on screen > a step of the model's runtime
self-check (when it was deferred: the model works on torch meanwhile; also while no image is
chosen, and before a propagation, which encodes many slices) > prefetch (the neighbouring
slices of a stack, nearest first, in the direction of the user's last move; then whatever a
background source offers, e.g. the next image of a series).

Results come back through :meth:`slice_encoded`, :meth:`masks_to_write` and :meth:`job_failed`; a
result for an image that is no longer annotated (another ``image_key``) is ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass

import numpy as np

from napari_swinlitemedsam.annotation.annotator_state import AnnotatorState, BoxSync, SliceKey
from napari_swinlitemedsam.annotation.jobs import (
    BackgroundJob,
    DecodeJob,
    EncodeJob,
    JobKind,
    LoadModelJob,
    PrefetchJob,
    PrepareJob,
    PropagateJob,
    RuntimeCheckJob,
    SliceJob,
)
from napari_swinlitemedsam.annotation.series import neighbours_to_prefetch

BackgroundSource = Callable[[], "BackgroundJob | None"]
"""Offers one short low-priority job when the annotator has nothing else to do, or None."""


@dataclass(frozen=True)
class Situation:
    """What the scheduler needs to know of the world outside it when choosing a job.

    ``model_label``: the loaded model's name (empty: none loaded). ``image_ready``: the image
    is prepared for the model. ``current``: the slice on screen. ``depth``: slices of the stack
    (None for a 2D image).
    """

    model_label: str = ""
    last_error: str = ""
    image_ready: bool = False
    current: SliceKey = None
    depth: int | None = None


@dataclass(frozen=True)
class Plan:
    """The next job (or None) and the status line to show (None: leave it as it is)."""

    job: SliceJob | BackgroundJob | None = None
    status: str | None = None


def plural(count: int, word: str, suffix: str = "s") -> str:
    return f"{count} {word}{suffix * (count != 1)}"


def slice_text(slice_index: SliceKey, depth: int | None) -> str:
    """``"the image"`` or ``"slice 3/10"`` (1-based, as the viewer's slider shows it)."""
    return "the image" if slice_index is None else f"slice {slice_index + 1}/{depth}"


class SliceScheduler:
    """The queue of one annotator: boxes to decode, objects to propagate, slices encoded."""

    def __init__(self, state: AnnotatorState, prefetch_radius: int = 2) -> None:
        self.state = state
        self.prefetch_radius = prefetch_radius
        self.image_key: Hashable | None = None
        self.pending: dict[SliceKey, set[int]] = {}
        self.propagations: list[int] = []
        self.encoded: set[SliceKey] = set()
        self.model_request: LoadModelJob | None = None
        self.stalled = False  # automatic work failed: wait for the user before trying again
        self.direction = 1
        self.last_slice: SliceKey = None
        self.background: list[BackgroundSource] = []
        self.runtime_check_pending = False  # the loaded model's self-check has steps left

    # ----------------------------------------------------------------- what happened
    @property
    def idle(self) -> bool:
        """Nothing is queued (an encode or prefetch may still be wanted)."""
        return not self.pending and not self.propagations and self.model_request is None

    def user_acted(self) -> None:
        """The user did something: work that failed on its own may be tried again."""
        self.stalled = False

    def model_chosen(self, request: LoadModelJob) -> None:
        """Another model: load it next; slices encoded by the old one no longer count."""
        self.model_request = request
        self.encoded.clear()
        self.runtime_check_pending = False  # the new model brings its own

    def attach(self, image_key: Hashable) -> None:
        """Start on another image (queues and bookkeeping of the previous one dropped)."""
        self.detach()
        self.image_key = image_key

    def detach(self) -> None:
        self.image_key = None
        self.pending.clear()
        self.propagations.clear()
        self.encoded.clear()
        self.last_slice, self.direction = None, 1

    def image_changed(self, image_key: Hashable) -> None:
        """The pixels changed: they are prepared and encoded again under ``image_key``."""
        self.image_key = image_key
        self.encoded.clear()

    def slice_shown(self, z: SliceKey) -> None:
        """The viewer shows slice ``z``; prefetching follows the direction of the move."""
        if self.last_slice is not None and z is not None and z != self.last_slice:
            self.direction = 1 if z > self.last_slice else -1
        self.last_slice = z

    def boxes_synced(self, sync: BoxSync) -> None:
        """Queue decodes for added and moved boxes; drop those of removed boxes."""
        for object_id, z in sync.removed:
            self.pending.get(z, set()).discard(object_id)
        for object_id, z in sync.added + sync.moved:
            self.pending.setdefault(z, set()).add(object_id)
        self.pending = {z: ids for z, ids in self.pending.items() if ids}

    def clicks_changed(self, changed: list[tuple[int, SliceKey]]) -> None:
        """Queue decodes for the ``(object_id, slice)`` whose clicks changed."""
        for object_id, z in changed:
            self.pending.setdefault(z, set()).add(object_id)

    def propagate(self, object_id: int) -> bool:
        """Queue a propagation of ``object_id``; False when it has no key-slice box."""
        obj = self.state.objects.get(object_id)
        if obj is None or not obj.key_boxes():
            return False
        if object_id not in self.propagations:
            self.propagations.append(object_id)
        return True

    def cancel_propagations(self) -> None:
        self.propagations.clear()

    # ----------------------------------------------------------------- what to do
    def next_job(self, situation: Situation) -> Plan:
        """The most urgent job for ``situation``, taken off the queue, with its status line."""
        if self.model_request is not None:
            request, self.model_request = self.model_request, None
            return Plan(request, f"Loading {request.label}...")
        if not situation.model_label:
            if situation.last_error:
                return Plan(
                    status=f"No model: {situation.last_error}. Choose another model or device."
                )
            return Plan(status="Choose a model to start")
        if self.image_key is None:
            status = f"{situation.model_label} ready: choose an image layer"
            return Plan(self._next_runtime_check(), status)
        if not situation.image_ready:
            return Plan() if self.stalled else Plan(PrepareJob(self.image_key), None)
        current, depth = situation.current, situation.depth
        decode = self._next_decode(current)
        if decode is not None:
            count = plural(len(decode.ids), "box", "es")
            where = slice_text(decode.slice_index, depth)
            return Plan(decode, f"Decoding {count} on {where}...")
        if self.propagations and (check := self._next_runtime_check()) is not None:
            # a propagation encodes many slices: measured runtimes first pay for themselves
            return Plan(check, "Measuring this machine's fastest runtime before propagating...")
        while self.propagations:
            object_id = self.propagations.pop(0)
            obj = self.state.objects.get(object_id)
            if obj is not None and obj.key_boxes():
                job = PropagateJob(self.image_key, object_id, obj.key_boxes())
                return Plan(job, f"Propagating object {object_id}...")
        if self.stalled:
            return Plan()  # the status line shows what failed
        if current not in self.encoded:
            job = EncodeJob(self.image_key, current)
            return Plan(job, f"Encoding {slice_text(current, depth)}...")
        count = len(self.state.objects)
        ready = f"Ready: {plural(count, 'object')}. Draw a box to add one."
        return Plan(self._next_runtime_check() or self._next_prefetch(current, depth), ready)

    def _next_runtime_check(self) -> RuntimeCheckJob | None:
        return RuntimeCheckJob() if self.runtime_check_pending and not self.stalled else None

    def _next_decode(self, current: SliceKey) -> DecodeJob | None:
        while self.pending:
            z = current if current in self.pending else next(iter(self.pending))
            ids, boxes, points, labels = self.state.decode_request(z, sorted(self.pending.pop(z)))
            if ids:
                return DecodeJob(self.image_key, z, ids, boxes, points, labels)
        return None

    def _next_prefetch(self, current: SliceKey, depth: int | None) -> PrefetchJob | None:
        if depth is not None and current is not None:
            near = neighbours_to_prefetch(
                0, 1, current, depth, self.prefetch_radius, self.direction
            )
            for target in near:
                if target.item == 0 and target.z not in self.encoded:
                    return PrefetchJob(self.image_key, target.z)
        for source in self.background:
            job = source()
            if job is not None:
                return job
        return None

    # ----------------------------------------------------------------- results
    def is_current(self, image_key: Hashable) -> bool:
        """Whether a result computed for ``image_key`` still belongs to the annotated image."""
        return self.image_key is not None and image_key == self.image_key

    def slice_encoded(self, image_key: Hashable, z: SliceKey) -> None:
        """Slice ``z`` of ``image_key`` is in the predictor's cache now."""
        if self.is_current(image_key):
            self.encoded.add(z)

    def masks_to_write(self, job: DecodeJob) -> list[int]:
        """Positions in ``job.ids`` whose box is still as decoded (boxes deleted or moved
        meanwhile are left out: a newer decode is queued for them)."""
        if not self.is_current(job.image_key):
            return []
        self.encoded.add(job.slice_index)
        keep = []
        for position, (object_id, box) in enumerate(zip(job.ids, job.boxes)):
            current = self.state.objects.get(object_id)
            box_now = None if current is None else current.boxes.get(job.slice_index)
            if box_now is not None and np.array_equal(box_now, box):
                keep.append(position)
        return keep

    def job_failed(self, kind: JobKind) -> None:
        """Automatic work that failed waits for the user (no retry loop); a failed runtime
        self-check is not tried again (the model stays on torch float32)."""
        self.stalled = kind.automatic
        if kind is JobKind.RUNTIME_CHECK:
            self.runtime_check_pending = False
