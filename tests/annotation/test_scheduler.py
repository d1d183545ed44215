"""What the annotator runs next, decided without Qt: priorities, slices, clicks, propagation order,
prefetch direction, stale results and failures."""

from __future__ import annotations

import numpy as np
import pytest

from napari_swinlitemedsam.annotation.annotator_state import AnnotatorState, ClickPoint, ShapeBox
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
)
from napari_swinlitemedsam.annotation.scheduler import Situation, SliceScheduler

READY_2D = Situation(model_label="LiteMedSAM", image_ready=True)


def stack(current: int, depth: int = 10) -> Situation:
    return Situation(model_label="LiteMedSAM", image_ready=True, current=current, depth=depth)


def box(x0, y0, x1, y1):
    return np.array([x0, y0, x1, y1])


@pytest.fixture
def scheduler():
    scheduler = SliceScheduler(AnnotatorState())
    scheduler.attach("image-1")
    return scheduler


def draw(scheduler, *shapes: ShapeBox):
    sync = scheduler.state.sync_boxes(list(shapes), labels_max=0)
    scheduler.boxes_synced(sync)
    return sync


def test_the_model_loads_first_then_the_image_is_prepared(scheduler):
    scheduler.model_chosen(LoadModelJob("litemedsam", "cpu", "LiteMedSAM"))
    plan = scheduler.next_job(Situation())
    assert plan.job == LoadModelJob("litemedsam", "cpu", "LiteMedSAM")
    assert plan.status == "Loading LiteMedSAM..."
    assert scheduler.next_job(Situation()).job is None  # taken off the queue: no second load
    assert scheduler.next_job(Situation()).status == "Choose a model to start"
    plan = scheduler.next_job(Situation(last_error="no such file"))
    assert plan.job is None and "No model: no such file" in plan.status
    assert scheduler.next_job(Situation(model_label="LiteMedSAM")).job == PrepareJob("image-1")


def test_without_an_image_the_status_asks_for_one():
    scheduler = SliceScheduler(AnnotatorState())
    plan = scheduler.next_job(READY_2D)
    assert plan.job is None and plan.status == "LiteMedSAM ready: choose an image layer"


def test_a_ready_image_is_encoded_then_the_scheduler_waits(scheduler):
    plan = scheduler.next_job(READY_2D)
    assert plan.job == EncodeJob("image-1", None)
    assert plan.status == "Encoding the image..."
    scheduler.slice_encoded("image-1", None)
    plan = scheduler.next_job(READY_2D)
    assert plan.job is None
    assert plan.status == "Ready: 0 objects. Draw a box to add one."


def test_boxes_of_one_slice_decode_in_one_job_the_slice_on_screen_first(scheduler):
    draw(
        scheduler,
        ShapeBox(0, 2, box(1, 1, 5, 5)),
        ShapeBox(0, 7, box(2, 2, 8, 8)),
        ShapeBox(0, 7, box(10, 10, 20, 20)),
    )
    first = scheduler.next_job(stack(current=7)).job
    assert isinstance(first, DecodeJob)
    assert first.slice_index == 7 and first.ids == [2, 3]
    assert first.boxes.tolist() == [[2, 2, 8, 8], [10, 10, 20, 20]]
    plan = scheduler.next_job(stack(current=7))
    assert plan.job.slice_index == 2 and plan.job.ids == [1]
    assert plan.status == "Decoding 1 box on slice 3/10..."


def test_a_box_deleted_before_its_decode_is_not_decoded(scheduler):
    draw(scheduler, ShapeBox(0, None, box(1, 1, 5, 5)))
    draw(scheduler)  # the user deleted it again
    assert not isinstance(scheduler.next_job(READY_2D).job, DecodeJob)


def test_clicks_queue_a_decode_of_their_object_with_points(scheduler):
    draw(scheduler, ShapeBox(0, None, box(0, 0, 20, 20)))
    scheduler.next_job(READY_2D)  # the box's own decode
    changed = scheduler.state.sync_points([ClickPoint(None, 5.0, 6.0, False)])
    scheduler.clicks_changed(changed)
    job = scheduler.next_job(READY_2D).job
    assert isinstance(job, DecodeJob) and job.ids == [1]
    assert job.points.tolist() == [[[5.0, 6.0]]] and job.point_labels.tolist() == [[0]]


def test_only_masks_of_boxes_unchanged_since_the_decode_are_written(scheduler):
    draw(scheduler, ShapeBox(0, None, box(1, 1, 5, 5)), ShapeBox(0, None, box(9, 9, 15, 15)))
    job = scheduler.next_job(READY_2D).job
    # While it ran, the user moved the second box: its mask waits for the next decode.
    draw(scheduler, ShapeBox(1, None, box(1, 1, 5, 5)), ShapeBox(2, None, box(8, 9, 15, 15)))
    assert scheduler.masks_to_write(job) == [0]
    assert None in scheduler.encoded
    assert scheduler.next_job(READY_2D).job.ids == [2]


def test_results_for_another_image_are_ignored(scheduler):
    draw(scheduler, ShapeBox(0, None, box(1, 1, 5, 5)))
    job = scheduler.next_job(READY_2D).job
    scheduler.image_changed("image-2")  # the pixels were edited meanwhile
    assert scheduler.masks_to_write(job) == []
    scheduler.slice_encoded("image-1", None)
    assert scheduler.encoded == set()
    assert not scheduler.is_current("image-1") and scheduler.is_current("image-2")


def test_propagations_run_in_the_order_asked_after_decodes(scheduler):
    draw(scheduler, ShapeBox(0, 3, box(1, 1, 5, 5)), ShapeBox(0, 6, box(2, 2, 9, 9)))
    assert scheduler.propagate(2) and scheduler.propagate(1) and scheduler.propagate(2)
    assert not scheduler.propagate(99)  # no such object
    assert isinstance(scheduler.next_job(stack(3)).job, DecodeJob)
    assert isinstance(scheduler.next_job(stack(3)).job, DecodeJob)
    first = scheduler.next_job(stack(3))
    assert first.job == PropagateJob("image-1", 2, first.job.key_boxes)
    assert list(first.job.key_boxes) == [6] and first.status == "Propagating object 2..."
    assert scheduler.next_job(stack(3)).job.object_id == 1
    assert not isinstance(scheduler.next_job(stack(3)).job, PropagateJob)


def test_a_propagation_of_an_object_deleted_meanwhile_is_dropped(scheduler):
    draw(scheduler, ShapeBox(0, 3, box(1, 1, 5, 5)))
    scheduler.propagate(1)
    draw(scheduler)
    scheduler.cancel_propagations()
    assert scheduler.idle


def test_prefetch_follows_the_direction_of_the_last_move(scheduler):
    scheduler.slice_shown(5)
    scheduler.slice_shown(4)  # moving down
    scheduler.slice_encoded("image-1", 4)
    wanted = []
    for _ in range(4):
        job = scheduler.next_job(stack(4)).job
        assert isinstance(job, PrefetchJob)
        wanted.append(job.slice_index)
        scheduler.slice_encoded("image-1", job.slice_index)
    assert wanted == [3, 5, 2, 6]
    assert scheduler.next_job(stack(4)).job is None


def test_background_sources_come_after_the_neighbouring_slices(scheduler):
    offered = BackgroundJob(work=lambda: None)
    scheduler.background.append(lambda: None)  # a source with nothing to do is skipped
    scheduler.background.append(lambda: offered)
    scheduler.slice_encoded("image-1", None)
    assert scheduler.next_job(READY_2D).job is offered


def test_the_runtime_check_steps_after_the_users_work_and_before_prefetch(scheduler):
    scheduler.runtime_check_pending = True
    draw(scheduler, ShapeBox(0, 4, box(1, 1, 5, 5)))
    assert isinstance(scheduler.next_job(stack(4)).job, DecodeJob)  # a box first
    assert scheduler.next_job(stack(4)).job == EncodeJob("image-1", 4)  # the slice on screen
    scheduler.slice_encoded("image-1", 4)
    plan = scheduler.next_job(stack(4))
    assert plan.job == RuntimeCheckJob() and plan.status.startswith("Ready")
    assert scheduler.next_job(stack(4)).job == RuntimeCheckJob()  # until it is done
    scheduler.runtime_check_pending = False  # it decided
    assert isinstance(scheduler.next_job(stack(4)).job, PrefetchJob)


def test_a_propagation_waits_for_the_runtime_check_but_a_box_does_not(scheduler):
    scheduler.runtime_check_pending = True
    draw(scheduler, ShapeBox(0, 3, box(1, 1, 5, 5)), ShapeBox(0, 3, box(12, 12, 16, 16)))
    assert scheduler.propagate(1)
    assert isinstance(scheduler.next_job(stack(3)).job, DecodeJob)
    plan = scheduler.next_job(stack(3))
    assert plan.job == RuntimeCheckJob() and "before propagating" in plan.status
    scheduler.runtime_check_pending = False
    job = scheduler.next_job(stack(3)).job
    assert isinstance(job, PropagateJob) and job.object_id == 1


def test_the_runtime_check_steps_while_no_image_is_chosen():
    scheduler = SliceScheduler(AnnotatorState())
    scheduler.runtime_check_pending = True
    plan = scheduler.next_job(READY_2D)
    assert plan.job == RuntimeCheckJob()
    assert plan.status == "LiteMedSAM ready: choose an image layer"


def test_a_failed_runtime_check_is_not_tried_again_and_another_model_drops_it(scheduler):
    scheduler.runtime_check_pending = True
    scheduler.slice_encoded("image-1", None)
    scheduler.job_failed(JobKind.RUNTIME_CHECK)
    assert not scheduler.runtime_check_pending
    scheduler.user_acted()
    assert scheduler.next_job(READY_2D).job is None
    scheduler.runtime_check_pending = True
    scheduler.model_chosen(LoadModelJob("litemedsam", "cpu", "LiteMedSAM"))
    assert not scheduler.runtime_check_pending


def test_failed_automatic_work_waits_for_the_user_but_boxes_still_decode(scheduler):
    scheduler.job_failed(JobKind.ENCODE)
    assert scheduler.next_job(READY_2D).job is None
    draw(scheduler, ShapeBox(0, None, box(1, 1, 5, 5)))
    assert isinstance(scheduler.next_job(READY_2D).job, DecodeJob)  # the user asked for it
    scheduler.job_failed(JobKind.DECODE)  # not automatic: no stall
    assert scheduler.next_job(READY_2D).job == EncodeJob("image-1", None)
    scheduler.job_failed(JobKind.PREPARE)
    assert scheduler.next_job(Situation(model_label="LiteMedSAM")).job is None
    scheduler.user_acted()
    assert scheduler.next_job(Situation(model_label="LiteMedSAM")).job == PrepareJob("image-1")


def test_another_model_forgets_the_encoded_slices(scheduler):
    scheduler.slice_encoded("image-1", None)
    scheduler.model_chosen(LoadModelJob("other.pth", "cpu", "other"))
    assert scheduler.encoded == set() and not scheduler.idle


def test_every_job_names_its_kind():
    assert {job.kind for job in (LoadModelJob, PrepareJob, EncodeJob, PrefetchJob)} == {
        JobKind.LOAD_MODEL,
        JobKind.PREPARE,
        JobKind.ENCODE,
        JobKind.PREFETCH,
    }
    assert DecodeJob.kind is JobKind.DECODE and PropagateJob.kind is JobKind.PROPAGATE
    assert JobKind.PREFETCH.automatic and not JobKind.DECODE.automatic
    assert RuntimeCheckJob.kind is JobKind.RUNTIME_CHECK and JobKind.RUNTIME_CHECK.automatic
