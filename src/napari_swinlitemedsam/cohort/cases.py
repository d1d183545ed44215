"""One case of a cohort, the same on a laptop and on a cluster worker.

:func:`segment_one` reads a challenge case, segments it, writes ``segs`` atomically and then
its manifest record; :func:`embed_planes` encodes a range of an image's planes into the disk
cache. Both take a ready predictor (the caller decides where it lives: one per process) and
turn any failure into one line, so one bad case never stops the others.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from napari_swinlitemedsam.cohort import manifest
from napari_swinlitemedsam.cohort.recipe import SegmentSettings

if TYPE_CHECKING:
    import numpy as np

    from napari_swinlitemedsam.inference.pipeline import CaseProgress
    from napari_swinlitemedsam.inference.predictor import BoxPredictor
    from napari_swinlitemedsam.io.image_files import LoadedImage

DONE, SKIPPED, FAILED = "done", "skipped", "failed"


@dataclass(frozen=True)
class CaseOutcome:
    """What became of one case.

    ``case``: the input file name; ``status``: ``done``, ``skipped`` (finished before, by the
    manifest) or ``failed``; ``message``: one line for the user; ``detail``: the traceback of
    a failure (shown with ``--debug``), else empty.
    """

    case: str
    status: str
    message: str
    seconds: float = 0.0
    detail: str = ""


def unexpected_failure_text(error: BaseException) -> str:
    """One line for an unexpected failure: its type and message, and how to see more."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else "no details"
    return f"{type(error).__name__}: {text} (run with --debug for the traceback)"


def case_failure_text(error: BaseException) -> str:
    """Our errors (ValueError, OSError) already say what is wrong; others get their type."""
    if isinstance(error, (ValueError, OSError)):
        return str(error)
    return unexpected_failure_text(error)


def failed_outcome(path: Path, error: BaseException, started: float) -> CaseOutcome:
    """The outcome of a case that raised ``error`` (call it in the ``except`` block: the
    traceback is the one being handled); ``started`` from ``time.perf_counter()``."""
    return CaseOutcome(
        path.name,
        FAILED,
        case_failure_text(error),
        time.perf_counter() - started,
        traceback.format_exc(),
    )


def manifest_settings(predictor: BoxPredictor, settings: SegmentSettings) -> dict:
    """The settings that decide a case's masks, as stored in its manifest record."""
    cache = predictor.disk_cache
    return {
        "include_end_slices": include_end_slices(predictor, settings),
        "stop_when_empty": settings.stop_when_empty,
        # float16 cached features can move mask pixels; float32 ones cannot
        "cached_features": cache.dtype if cache is not None else "float32",
    }


def include_end_slices(predictor: BoxPredictor, settings: SegmentSettings) -> bool:
    """The Swin-LiteMedSAM reference stops one slice short of a box's ends."""
    return not (settings.reference and predictor.model_name == "swin-litemedsam")


def segment_one(
    predictor: BoxPredictor,
    path: Path,
    output_folder: Path,
    settings: SegmentSettings,
    skip_done: bool = False,
    on_progress: Callable[[CaseProgress], None] | None = None,
) -> CaseOutcome:
    """Segment the case file ``path`` into ``output_folder / path.name`` and record it.

    With ``skip_done``, a case whose manifest record matches this input, model and settings
    (and whose output is intact) is not redone. Never raises for a bad case: the failure is
    the outcome's one-line message (exceptions that are not ``Exception``, such as
    KeyboardInterrupt, still stop the run).
    """
    from napari_swinlitemedsam.inference import pipeline
    from napari_swinlitemedsam.io.challenge_io import load_case, save_segs

    started = time.perf_counter()
    try:
        input_sha256 = manifest.file_sha256(path)
        model = predictor.encoder_identity
        recorded = manifest_settings(predictor, settings)
        if skip_done and manifest.is_done(output_folder, path.name, input_sha256, model, recorded):
            return CaseOutcome(path.name, SKIPPED, "finished before (manifest)")
        case = load_case(path)
        steps = pipeline.segment_case(
            predictor,
            case,
            include_end_slices=recorded["include_end_slices"],
            stop_when_empty=settings.stop_when_empty,
        )
        while True:
            try:
                progress = next(steps)
            except StopIteration as finished:
                segs = finished.value
                break
            if on_progress is not None:
                on_progress(progress)
        written = save_segs(output_folder / path.name, segs)
        record = manifest.make_record(input_sha256, model, recorded, written)
        manifest.write_record(output_folder, path.name, record)
    except Exception as error:  # noqa: BLE001 -- one bad case never stops the others
        return failed_outcome(path, error, started)
    seconds = time.perf_counter() - started
    return CaseOutcome(path.name, DONE, f"{len(case.boxes)} boxes, {seconds:.2f} s", seconds)


def model_planes(image: LoadedImage) -> Sequence[np.ndarray]:
    """The 2D planes the model encodes for ``image``: one per slice of a stack, read when it is
    encoded and mapped to uint8 with one mapping for the whole stack (decided the same way in
    every process, so that every slice range gives the same cache keys), or the image itself."""
    import numpy as np

    from napari_swinlitemedsam.inference.volume_slices import VolumeSlices

    if not image.is_stack:
        return [np.asarray(image.data)]
    return VolumeSlices(image.data)


def embed_planes(
    predictor: BoxPredictor,
    planes: Sequence[np.ndarray],
    start: int = 0,
    stop: int | None = None,
    on_slice: Callable[[int, int], None] | None = None,
) -> tuple[int, int]:
    """Encode ``planes[start:stop]`` that are not in the predictor's disk cache yet.

    Planes still to encode go to the predictor ``slices_per_encode`` at a time (a graph
    runtime encodes them side by side). ``on_slice(done, total)`` is called once per plane of
    the range, in order, when it is cached or encoded. Returns ``(encoded, already_cached)``.
    """
    from napari_swinlitemedsam.inference.predictor import model_input_uint8

    cache = predictor.disk_cache
    if cache is None:
        raise ValueError("embedding needs a predictor with a disk cache (predictor.disk_cache)")
    chosen = range(len(planes))[start:stop]
    per_call = max(1, int(getattr(predictor, "slices_per_encode", 1)))
    pending: list[np.ndarray] = []
    encoded = cached = reported = 0

    def report(done: int) -> None:
        nonlocal reported
        for count in range(reported + 1, done + 1):
            if on_slice is not None:
                on_slice(count, len(chosen))
        reported = max(reported, done)

    for index, z in enumerate(chosen):
        plane = planes[z]
        if cache.key_for(model_input_uint8(plane), predictor.encoder_identity) in cache:
            cached += 1
        else:
            pending.append(plane)
        if len(pending) == per_call:
            predictor.encode_many(pending)  # no memory-cache keys: memory stays bounded
            encoded += len(pending)
            pending = []
        if not pending:
            report(index + 1)
    if pending:
        predictor.encode_many(pending)
        encoded += len(pending)
    report(len(chosen))
    return encoded, cached
