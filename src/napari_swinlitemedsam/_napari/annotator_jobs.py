"""How each kind of annotator job starts, and where its result goes.

The :class:`~.annotator.Annotator` asks its ``SliceScheduler`` for the most urgent job and hands
it to :meth:`AnnotatorJobs.start`; the job's work runs on the annotator's ``JobRunner`` thread
(the functions of ``annotation.slice_work``) and its result comes back here, on the GUI thread:
a loaded predictor, a prepared image, an encoded slice, decoded masks written into the masks
layer (one undo step per decode), a propagation's slices written as they arrive (one undo step
for the whole object); a failed job is reported and a propagation's slices taken back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from napari.utils.notifications import show_error

from napari_swinlitemedsam._napari import layer_io
from napari_swinlitemedsam.annotation import jobs, slice_work
from napari_swinlitemedsam.annotation.failure_messages import explain_failure
from napari_swinlitemedsam.annotation.jobs import JobKind
from napari_swinlitemedsam.annotation.scheduler import plural, slice_text

if TYPE_CHECKING:  # the annotator creates this; only the type flows back
    from napari_swinlitemedsam._napari.annotator import Annotator


class AnnotatorJobs:
    """Starts the scheduler's typed jobs for ``annotator`` and applies their results."""

    def __init__(self, annotator: Annotator) -> None:
        self.annotator = annotator
        self._starters = {
            jobs.LoadModelJob: self.start_model_load,
            jobs.PrepareJob: self.start_prepare,
            jobs.EncodeJob: self.start_encode,
            jobs.PrefetchJob: self.start_encode,
            jobs.DecodeJob: self.start_decode,
            jobs.PropagateJob: self.start_propagation,
            jobs.BackgroundJob: self.start_background,
            jobs.RuntimeCheckJob: self.start_runtime_check,
        }

    def start(self, job) -> None:
        """Start ``job`` (one of the ``annotation.jobs`` types) on the annotator's runner."""
        self._starters[type(job)](job)

    def start_model_load(self, job: jobs.LoadModelJob) -> None:
        annotator = self.annotator

        def loaded(result) -> None:
            if annotator.scheduler.model_request is not None:
                return  # another model was chosen meanwhile; it loads next
            annotator.predictor, seconds = result
            # the disk cache may have been set during the load
            annotator.predictor.disk_cache = annotator.disk_cache
            annotator.model_label, annotator.model_source, annotator.last_error = job.label, job, ""
            check = getattr(annotator.predictor, "pending_self_check", None)
            annotator.scheduler.runtime_check_pending = check is not None
            later = "" if check is None else " (torch fp32 until its runtime self-check decides)"
            annotator.on_status(f"{job.label} loaded in {seconds:.1f} s{later}")

        args = (job.name_or_path, job.device, annotator.disk_cache, job.precision)
        annotator.runner.start(
            job.kind,
            slice_work.load_predictor,
            args,
            on_return=loaded,
            on_done=annotator.progress.end,
        )
        annotator.progress.show(f"Loading {job.label}")

    def start_prepare(self, job: jobs.PrepareJob) -> None:
        annotator = self.annotator
        annotator.on_status(f"Reading '{annotator.image.name}'...")

        budget = annotator.read_ahead_bytes

        def prepared(array) -> None:
            # Read with a budget changed meanwhile: dropped, and read again (see set_read_ahead).
            if (
                annotator.scheduler.is_current(job.image_key)
                and budget == annotator.read_ahead_bytes
            ):
                annotator._image_u8 = array

        args = (annotator.image.data, annotator.is_stack, annotator.window, budget)
        annotator.runner.start(job.kind, slice_work.prepare_image, args, on_return=prepared)

    def start_encode(self, job: jobs.EncodeJob | jobs.PrefetchJob) -> None:
        """Encode a slice into the predictor's cache (a prefetch: quietly, without a bar)."""
        annotator = self.annotator

        def encoded(result) -> None:
            annotator.scheduler.slice_encoded(job.image_key, result[0])

        args = (annotator.predictor, annotator._image_u8, job)
        if job.kind is JobKind.PREFETCH:
            return annotator.runner.start(
                job.kind, slice_work.encode_slice, args, on_return=encoded
            )
        annotator.runner.start(
            job.kind,
            slice_work.encode_slice,
            args,
            on_return=encoded,
            on_done=annotator.progress.end,
        )
        annotator.progress.show(f"Encoding {slice_text(job.slice_index, annotator._depth())}")

    def start_background(self, job: jobs.BackgroundJob) -> None:
        annotator = self.annotator
        annotator.runner.start(job.kind, job.work, job.args, on_return=job.on_return)

    def start_runtime_check(self, job: jobs.RuntimeCheckJob) -> None:
        """One step of the loaded model's deferred self-check; once it has decided, the
        predictor runs the chosen runtimes (it switched itself in the step)."""
        annotator = self.annotator
        predictor = annotator.predictor
        check = getattr(predictor, "pending_self_check", None)
        if check is None:  # finished in the step before
            annotator.scheduler.runtime_check_pending = False
            annotator.schedule()
            return

        def stepped(finished: bool) -> None:
            if not finished or annotator.predictor is not predictor:
                return
            annotator.scheduler.runtime_check_pending = False
            annotator.on_status(f"Runtime self-check done: {predictor.describe_runtimes()}")

        annotator.runner.start(job.kind, check.step, (), on_return=stepped)

    def start_decode(self, job: jobs.DecodeJob) -> None:
        annotator = self.annotator
        args = (annotator.predictor, annotator._image_u8, job)
        annotator.runner.start(job.kind, slice_work.decode_slice, args, on_return=self.decoded)

    def decoded(self, result: slice_work.DecodeResult) -> None:
        annotator = self.annotator
        job = result.job
        if annotator.labels is None:
            return
        with annotator.labels.block_history():
            for position in annotator.scheduler.masks_to_write(job):
                object_id, mask = job.ids[position], result.masks[position]
                layer_io.write_object_mask(
                    annotator.labels, object_id, mask, job.slice_index, annotator.overwrite
                )
        annotator.last_decode_seconds = result.seconds
        annotator.on_status(
            f"Decoded {plural(len(job.ids), 'box', 'es')} on "
            f"{slice_text(job.slice_index, annotator._depth())} in {result.seconds:.2f} s"
        )

    def start_propagation(self, job: jobs.PropagateJob) -> None:
        annotator = self.annotator
        depth, object_id = annotator._depth(), job.object_id
        annotator._undo_group.open(annotator.labels)

        def arrived(result) -> None:
            if not annotator.scheduler.is_current(job.image_key) or annotator.labels is None:
                return
            layer_io.write_object_mask(
                annotator.labels, object_id, result.mask, result.z, annotator.overwrite
            )
            annotator._undo_group.written = True
            annotator.scheduler.slice_encoded(job.image_key, result.z)
            annotator.on_status(
                f"Propagating object {object_id}: slice {result.z + 1}/{depth} "
                f"({result.done}/{result.total})"
            )
            # last: the bar may process events
            annotator.progress.advance(result.done, result.total)

        def ended() -> None:
            if annotator._undo_group.is_open:  # not failed (a failure took the slices back)
                annotator._undo_group.close()
                annotator.on_status(f"Object {object_id} propagated")
            annotator.progress.end()

        args = (annotator.predictor, annotator._image_u8, job, annotator.reference_propagation)
        annotator.runner.start(
            job.kind, slice_work.propagate_object, args, on_yield=arrived, on_done=ended
        )
        annotator.progress.show(f"Propagating object {object_id}", total=depth)

    def failed(self, error: Exception) -> None:
        """Report a failed job; a propagation's slices written so far are taken back."""
        annotator = self.annotator
        annotator._undo_group.close(roll_back=True)
        annotator.scheduler.job_failed(annotator.runner.kind)
        annotator.last_error = explain_failure(error, annotator.runner.kind)
        annotator.on_status(f"Error: {annotator.last_error}")
        show_error(f"Box annotator: {annotator.last_error}")
        annotator.progress.end()
